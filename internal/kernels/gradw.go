package kernels

// The filter gradient of a convolution (groups 1) without a patch matrix:
//
//	dw[f][ky][kx][c] = Σ_images Σ_(oy,ox) dz[oy][ox][f] · x[oy·S−P+ky][ox·S−P+kx][c]
//
// over the output pixels whose tap falls inside the image (padding reads
// as zero and adds nothing). Each tap's [F]×[C] block is a sum of outer
// products over rows of dz and of x; AVX-512 tiles of 16 filters × 16
// channels stay in registers over a whole image's rows (Go elsewhere, or
// where F or C is not a multiple of 16). Images are summed in chunks of
// GradWChunk, each chunk's partial computed by one thread and the partials
// added in chunk order: the bits do not depend on the thread count.

// GradWChunk is the images one partial filter gradient sums.
const GradWChunk = 16

// GradWFast says whether GradW runs in SIMD tiles for win and f filters
// (elsewhere a patch matrix and a GEMM are faster).
func GradWFast(win Window, f int) bool { return hasDirect && f%16 == 0 && win.C%16 == 0 }

// GradW computes dw ([F][K][K][C]) from dz (n images of OH·OW·F) and x (n
// images of H·W·C) for win; scratch holds the chunks' partials (grown and
// returned for the next call).
func GradW(parallel func(count, grain int, f func(lo, hi int)), win Window, f int, dz, x []float32, n int, dw, scratch []float32) []float32 {
	oh, ow := win.Out()
	isz, osz, wsz := win.H*win.W*win.C, oh*ow*f, len(dw)
	chunks := (n + GradWChunk - 1) / GradWChunk
	if cap(scratch) < chunks*wsz {
		scratch = make([]float32, chunks*wsz)
	}
	scratch = scratch[:chunks*wsz]
	parallel(chunks, 1, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			acc := scratch[ch*wsz : (ch+1)*wsz]
			clear(acc)
			for b := ch * GradWChunk; b < min(n, (ch+1)*GradWChunk); b++ {
				gradWImage(win, f, dz[b*osz:(b+1)*osz], x[b*isz:(b+1)*isz], acc)
			}
		}
	})
	copy(dw, scratch[:wsz])
	for ch := 1; ch < chunks; ch++ {
		for i, v := range scratch[ch*wsz : (ch+1)*wsz] {
			dw[i] += v
		}
	}
	return scratch
}

// span is the range of output positions along one axis whose tap t falls
// inside [0, size): o·stride − pad + t ∈ [0, size).
func span(out, size, stride, pad, t int) (lo, hi int) {
	lo = max(0, (pad-t+stride-1)/stride)
	if pad-t < 0 {
		lo = 0
	}
	hi = min(out, (size-1+pad-t)/stride+1)
	if size-1+pad-t < 0 {
		hi = 0
	}
	return lo, max(lo, hi)
}

// gradWImage adds one image's filter gradient to acc.
func gradWImage(win Window, f int, dz, x, acc []float32) {
	oh, ow := win.Out()
	k, c, s, p := win.K, win.C, win.Stride, win.Pad
	simd := GradWFast(win, f)
	for ky := range k {
		y0, y1 := span(oh, win.H, s, p, ky)
		for kx := range k {
			x0, x1 := span(ow, win.W, s, p, kx)
			if y0 >= y1 || x0 >= x1 {
				continue
			}
			dz0 := (y0*ow + x0) * f
			x00 := ((y0*s-p+ky)*win.W + x0*s - p + kx) * c
			tap := (ky*k + kx) * c
			if simd {
				for fb := 0; fb < f; fb += 16 {
					for cb := 0; cb < c; cb += 16 {
						gradwTile(&dz[dz0+fb], 4*f, 4*ow*f, &x[x00+cb], 4*s*c, 4*s*win.W*c, y1-y0, x1-x0,
							&acc[fb*k*k*c+tap+cb], 4*k*k*c)
					}
				}
				continue
			}
			for oy := y0; oy < y1; oy++ {
				for ox := x0; ox < x1; ox++ {
					zr := dz[dz0+((oy-y0)*ow+(ox-x0))*f:][:f]
					xr := x[x00+((oy-y0)*s*win.W+(ox-x0)*s)*c:][:c]
					for fi, g := range zr {
						a := acc[fi*k*k*c+tap:][:c]
						for ci, v := range xr {
							a[ci] += g * v
						}
					}
				}
			}
		}
	}
}
