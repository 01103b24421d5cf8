package infer

// Sparse rows against feature-major activations: the CSRT kernel. A
// layer's input is held transposed, xT[feature][sample] with a row stride
// ld (the batch rounded up to lanes), so that one non-zero weight
// multiplies a contiguous run of samples: SIMD across the batch, the
// zeros never touched. Consecutive CSRT layers hand each other this
// layout; other layers get it transposed back.

// lanes is the number of samples the SIMD kernel computes per pass.
const lanes = 32

// ldFor is the row stride of the transposed layout for a batch.
func ldFor(batch int) int { return (batch + lanes - 1) / lanes * lanes }

// transpose writes x [batch, f] as xT [f, ld].
func transpose(xT, x []float32, batch, f, ld int) { block(xT, ld, x, f, 0, batch, 0, f) }

// untranspose writes xT [f, ld] back as x [batch, f].
func untranspose(x, xT []float32, batch, f, ld int) { block(x, f, xT, ld, 0, f, 0, batch) }

// block writes dst[c·ldd + r] = src[r·lds + c] for r ∈ [r0, r1) and
// c ∈ [c0, c1): 8×8 blocks with AVX where it runs, a column strip of
// blocks at a time (its source lines stay in cache for the next strip),
// the edges one by one.
func block(dst []float32, ldd int, src []float32, lds, r0, r1, c0, c1 int) {
	c := c0
	if hasFMA {
		for ; c+8 <= c1; c += 8 {
			r := r0
			for ; r+8 <= r1; r += 8 {
				transpose8(&src[r*lds+c], lds, &dst[c*ldd+r], ldd)
			}
			for ; r < r1; r++ {
				for cc := c; cc < c+8; cc++ {
					dst[cc*ldd+r] = src[r*lds+cc]
				}
			}
		}
	}
	for ; c < c1; c++ {
		for r := r0; r < r1; r++ {
			dst[c*ldd+r] = src[r*lds+c]
		}
	}
}

// panel is the number of samples of one pass over a layer's rows: the
// activations it touches (features × panel floats) stay in cache.
const panel = 128

// runT applies a linear layer in the transposed layout: yT [out, ld] =
// act(W·xT + b), then the activation quantization, over all ld lanes. It
// runs on one thread: on the 2-vCPU machines measured here a second one
// made it slower (BENCHMARKS.md), and the per-layer choice weighs it
// against the dense GEMM, which does use the engine's threads.
func (l *Layer) runT(yT, xT []float32, ld int) {
	for p0 := 0; p0 < ld; p0 += panel {
		n := min(panel, ld-p0)
		for r := 0; r < l.Out; r++ {
			lo, hi := l.rowPtr[r], l.rowPtr[r+1]
			y := yT[r*ld+p0 : r*ld+p0+n]
			if hi == lo {
				clear(y)
				continue
			}
			if hasFMA {
				spmmRowFMA(&l.vals[lo], &l.cols[lo], int(hi-lo), &xT[p0], ld, &y[0], n)
				continue
			}
			clear(y)
			for k := lo; k < hi; k++ {
				w, x := l.vals[k], xT[int(l.cols[k])*ld+p0:int(l.cols[k])*ld+p0+n]
				for s := range y {
					y[s] += w * x[s]
				}
			}
		}
	}
	for r := 0; r < l.Out; r++ {
		y, b := yT[r*ld:(r+1)*ld], l.b[r]
		for s := range y {
			y[s] += b
		}
		l.activate(y)
	}
}
