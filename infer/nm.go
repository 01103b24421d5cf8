package infer

// The N:M kernel runs a layer pruned 2:4 — at most 2 non-zero weights in
// every group of 4 consecutive inputs — from a layout built for it: each
// row's inputs in chunks of 32 (8 groups), 16 value slots per chunk with
// the position of each in the chunk as a byte. On AVX-512 one
// permutation picks a chunk's 16 inputs from two registers and one FMA
// multiplies them; elsewhere a Go loop reads the same layout. Half the
// multiply-adds of the dense product, a quarter of CSR's index bytes, and
// SIMD at batch 1.
type nmLayer struct {
	k, chunks int
	vals      []float32 // [out][chunks][16]
	idx       []uint8   // [out][chunks][16], positions 0…31 in the chunk
	x         []float32 // scratch: one input row padded to 32·chunks
}

// NM is the kernel's name.
const NM = "nm-2:4"

// newNM builds the 2:4 layout of a weight [out, k], or nil when some
// group of 4 holds more than 2 non-zero weights.
func newNM(w []float32, out, k int) *nmLayer {
	if k < 4 {
		return nil
	}
	chunks := (k + 31) / 32
	nm := &nmLayer{k: k, chunks: chunks, vals: make([]float32, out*chunks*16), idx: make([]uint8, out*chunks*16),
		x: make([]float32, chunks*32)}
	for r := 0; r < out; r++ {
		row := w[r*k : (r+1)*k]
		for g := 0; g*4 < k; g++ {
			c, j := g/8, g%8
			slot := (r*chunks+c)*16 + 2*j
			n := 0
			for i := g * 4; i < min(g*4+4, k); i++ {
				if row[i] == 0 {
					continue
				}
				if n == 2 {
					return nil
				}
				nm.vals[slot+n], nm.idx[slot+n] = row[i], uint8(i-c*32)
				n++
			}
			for ; n < 2; n++ {
				nm.idx[slot+n] = uint8(4 * j) // an empty slot: value 0 times a lane that exists
			}
		}
	}
	return nm
}

// run computes y [rows, out] = x [rows, k] · Wᵀ + b.
func (nm *nmLayer) run(l *Layer, y, x []float32, rows int) {
	for s := 0; s < rows; s++ {
		xs, ys := x[s*nm.k:(s+1)*nm.k], y[s*l.Out:(s+1)*l.Out]
		copy(nm.x, xs) // padded: the tail of the last chunk reads zeros
		if hasAVX512 {
			nmRows(&nm.x[0], &nm.vals[0], &nm.idx[0], nm.chunks, l.Out, &ys[0])
		} else {
			for r := range ys {
				var acc float32
				vals, idx := nm.vals[r*nm.chunks*16:(r+1)*nm.chunks*16], nm.idx[r*nm.chunks*16:(r+1)*nm.chunks*16]
				for c := 0; c < nm.chunks; c++ {
					xc := nm.x[c*32 : c*32+32]
					for j := c * 16; j < c*16+16; j++ {
						acc += vals[j] * xc[idx[j]]
					}
				}
				ys[r] = acc
			}
		}
		for r := range ys {
			ys[r] += l.b[r]
		}
	}
}
