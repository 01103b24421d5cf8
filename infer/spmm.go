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
func transpose(xT, x []float32, batch, f, ld int) {
	const blk = 16
	for s0 := 0; s0 < batch; s0 += blk {
		s1 := min(s0+blk, batch)
		for j0 := 0; j0 < f; j0 += blk {
			j1 := min(j0+blk, f)
			for s := s0; s < s1; s++ {
				row := x[s*f : s*f+f]
				for j := j0; j < j1; j++ {
					xT[j*ld+s] = row[j]
				}
			}
		}
	}
}

// untranspose writes xT [f, ld] back as x [batch, f].
func untranspose(x, xT []float32, batch, f, ld int) {
	const blk = 16
	for j0 := 0; j0 < f; j0 += blk {
		j1 := min(j0+blk, f)
		for s0 := 0; s0 < batch; s0 += blk {
			s1 := min(s0+blk, batch)
			for j := j0; j < j1; j++ {
				col := xT[j*ld : j*ld+ld]
				for s := s0; s < s1; s++ {
					x[s*f+j] = col[s]
				}
			}
		}
	}
}

// panel is the number of samples of one pass over a layer's rows: the
// activations it touches (features × panel floats) stay in cache.
const panel = 128

// runT applies a linear layer in the transposed layout: yT [out, ld] =
// act(W·xT + b), then the activation quantization, over all ld lanes.
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
		if l.ReLU {
			for s, v := range y {
				if v < 0 {
					y[s] = 0
				}
			}
		}
	}
	if l.actQ != nil {
		l.actQ.apply(yT[:l.Out*ld])
	}
}
