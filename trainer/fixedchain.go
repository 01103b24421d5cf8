package trainer

// A linear layer's weight gradient summed over a worker's micro-shards in
// one pass. computeShards has each run keep its operands (dz and x, a few
// kilobytes: graphop.Deferrable) instead of writing its product, and
// fixedProducts computes every run's dzᵀ·x in registers — the exact
// GEMM's chain of fused multiply-adds over the run's samples in order, so
// the same float32 values — converts each as ToFixed does and sums the
// runs' integers, writing the int64 vector once: no product is written as
// float32 and read back.

// fixedSeg is one run's operands for the fixedChain kernels: dz [n, out]
// and x [n, in], x at the panel's first column.
type fixedSeg struct {
	dz, x *float32
	n     int
}

// fixedChainShape is the fixedChain kernels' layout: dz's, x's and into's
// row strides in bytes, the blocks of four rows, the runs, and 1 to add
// to into (0: the first run sets it).
type fixedChainShape struct {
	dzStride, xStride, intoStride, blocks, runs, add int
}

// canFixProducts says whether fixedProducts takes an out × in gradient
// here: AVX-512, rows in fours and columns in sixteens.
func canFixProducts(out, in int) bool {
	return hasAVX512DQ && out > 0 && in > 0 && out%4 == 0 && in%16 == 0
}

var noOperand [1]float32

// fixedProducts sets rows [r0, r1) of into (out × in, row-major; with
// add, adds to them) to Σ_r ToFixed(dz_rᵀ·x_r)[o, i], dz_r [ns[r], out]
// and x_r [ns[r], in] (canFixProducts must hold, and r0 and r1 be
// multiples of four). It returns false, into partly written, when a
// product holds a value ToFixed refuses; the caller then finds which.
func fixedProducts(into []int64, dzs, xs [][]float32, ns []int, out, in, r0, r1 int, add bool) bool {
	into = into[r0*in : r1*in]
	segs := make([]fixedSeg, len(ns))
	sh := fixedChainShape{dzStride: 4 * out, xStride: 4 * in, intoStride: 8 * in, blocks: (r1 - r0) / 4, runs: len(ns)}
	if add {
		sh.add = 1
	}
	if len(ns) == 0 || r0 == r1 {
		if !add {
			clear(into)
		}
		return true
	}
	for j := 0; j < in; {
		w := 64
		if in-j < 64 {
			w = 16
		}
		for r, n := range ns {
			segs[r] = fixedSeg{dz: &noOperand[0], x: &noOperand[0]}
			if n > 0 {
				_, _ = dzs[r][n*out-1], xs[r][(n-1)*in+j+w-1]
				segs[r] = fixedSeg{dz: &dzs[r][r0], x: &xs[r][j], n: n}
			}
		}
		ok := false
		if w == 64 {
			ok = fixedChain64(&into[j], &segs[0], &sh)
		} else {
			ok = fixedChain1(&into[j], &segs[0], &sh)
		}
		if !ok {
			return false
		}
		j += w
	}
	return true
}
