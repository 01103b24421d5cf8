package cpu

import "math"

// The exact product (Options.Exact): every output of Sgemm is a function of
// its own operands alone — not of the product's shape, the row or column it
// falls in, the thread count, the BLAS build or the machine. OpenBLAS's
// outputs depend on all of these (docs/cluster.md), which ties a cluster
// replica to computing each micro-shard as a product of its own, with one
// thread. The order, with fma the fused multiply-add rounded once:
//
//   - op(B) = B (transB false): one chain over k in order from +0,
//     t = fma(op(A)[i,k], B[k,j], t);
//   - op(B) = Bᵀ (transB true): sixteen chains, lane l taking the k ≡ l
//     (mod 16) in order from +0, then summed as a tree — lane l plus lane
//     l+8 (l < 8), then l plus l+4, l plus l+2, l plus l+1;
//
// then t = alpha·t where alpha ≠ 1 and t = t + beta·C where beta ≠ 0, each
// rounded. The AVX-512 kernels (exact_amd64.s) and the Go loops below give
// the same bits (exact_test.go).

// exactGemm is Sgemm with Options.Exact. With par, the output rows split
// across the engine's threads in blocks of four (the split changes no
// output); else it all runs on the calling goroutine (ParallelGemms).
func (e *Engine) exactGemm(par bool, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	out, ldo := c, ldc
	direct := alpha == 1 && beta == 0
	if !direct { // the chains go to a scratch matrix, then combine with C
		if par && cap(e.scratch) >= m*n {
			out = e.scratch[:m*n]
		} else {
			out = make([]float32, m*n)
			if par {
				e.scratch = out
			}
		}
		ldo = n
	}
	if par {
		e.Parallel((m+3)/4, 1, func(lo, hi int) {
			exactRows(transA, transB, 4*lo, min(4*hi, m), n, k, a, lda, b, ldb, out, ldo)
		})
	} else {
		exactRows(transA, transB, 0, m, n, k, a, lda, b, ldb, out, ldo)
	}
	if direct {
		return
	}
	for i := range m {
		row, dst := out[i*n:(i+1)*n], c[i*ldc:i*ldc+n]
		for j, t := range row {
			dst[j] = combine(t, alpha, beta, dst[j])
		}
	}
}

// combine is alpha·t + beta·old, each operation rounded on its own.
func combine(t, alpha, beta, old float32) float32 {
	if alpha != 1 {
		t = float32(alpha * t)
	}
	if beta != 0 {
		t = t + float32(beta*old)
	}
	return t
}

// exactRows computes the chains of output rows [i0, i1) into out.
func exactRows(transA, transB bool, i0, i1, n, k int, a []float32, lda int, b []float32, ldb int, out []float32, ldo int) {
	if i0 >= i1 || n == 0 {
		return
	}
	// op(A)[i,k] is a[i*ars + k*aks].
	ars, aks := lda, 1
	if transA {
		ars, aks = 1, lda
	}
	switch {
	case hasExactAsm && transB && !transA && k > 0:
		dotRowsAsm(i0, i1, n, k, a, lda, b, ldb, out, ldo)
	case hasExactAsm && !transB && k > 0:
		chainRowsAsm(i0, i1, n, k, a, ars, aks, b, ldb, out, ldo)
	case hasExactAVX2 && transB && !transA && k > 0:
		dotRowsAVX2(i0, i1, n, k, a, lda, b, ldb, out, ldo)
	case hasExactAVX2 && !transB && k > 0:
		chainRowsAVX2(i0, i1, n, k, a, ars, aks, b, ldb, out, ldo)
	case transB:
		dotRowsGo(i0, i1, n, k, a, ars, aks, b, ldb, out, ldo)
	default:
		chainRowsGo(i0, i1, n, k, a, ars, aks, b, ldb, out, ldo)
	}
}

// chainRowsGo is the op(B) = B order in Go.
func chainRowsGo(i0, i1, n, k int, a []float32, ars, aks int, b []float32, ldb int, out []float32, ldo int) {
	for i := i0; i < i1; i++ {
		row := out[i*ldo : i*ldo+n]
		for j := range row {
			var t float32
			for kk := range k {
				t = fma32(a[i*ars+kk*aks], b[kk*ldb+j], t)
			}
			row[j] = t
		}
	}
}

// dotRowsGo is the op(B) = Bᵀ order in Go.
func dotRowsGo(i0, i1, n, k int, a []float32, ars, aks int, b []float32, ldb int, out []float32, ldo int) {
	for i := i0; i < i1; i++ {
		for j := range n {
			var lane [16]float32
			for kk := range k {
				lane[kk%16] = fma32(a[i*ars+kk*aks], b[j*ldb+kk], lane[kk%16])
			}
			out[i*ldo+j] = laneSum(&lane)
		}
	}
}

// laneSum is the tree the op(B) = Bᵀ order ends with.
func laneSum(v *[16]float32) float32 {
	for w := 8; w >= 1; w /= 2 {
		for l := range w {
			v[l] = v[l] + v[l+w]
		}
	}
	return v[0]
}

// fma32 is x·y + z rounded once to float32 (round to nearest, ties to
// even). The product is exact in float64; the sum's rounding error is
// recovered exactly (TwoSum), the sum rounded to odd in float64 with it,
// and rounding that to float32 is then correct (53 ≥ 24 + 2 bits).
func fma32(x, y, z float32) float32 {
	p := float64(float64(x) * float64(y))
	zz := float64(z)
	s := float64(p + zz)
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return float32(s)
	}
	bv := float64(s - p)
	err := float64(p-float64(s-bv)) + float64(zz-bv)
	if err != 0 && math.Float64bits(s)&1 == 0 { // to odd: toward the exact sum
		s = math.Nextafter(s, math.Copysign(math.Inf(1), err))
	}
	return float32(s)
}

// chainRowsAsm runs chainTile over rows [i0, i1) in panels of sixty-four
// columns.
func chainRowsAsm(i0, i1, n, k int, a []float32, ars, aks int, b []float32, ldb int, out []float32, ldo int) {
	chainPanels(i0, i1, n, k, a, ars, aks, b, ldb, out, ldo, 64, func(s *chainShape, w int) {
		s.masks = 0
		for z := 0; z < 4; z++ {
			s.masks |= uint64(laneMask(w-16*z)) << (16 * z)
		}
	}, chainTile)
}

// chainPanels runs tile over rows [i0, i1) in panels of width columns,
// each panel's full four-row blocks in one call (a panel of B stays in
// cache across them) and a last, shorter block in another; panel sets the
// shape's lanes for a panel of w columns.
func chainPanels(i0, i1, n, k int, a []float32, ars, aks int, b []float32, ldb int, out []float32, ldo, width int,
	panel func(s *chainShape, w int), tile func(c, a, b *float32, s *chainShape)) {
	if k == 0 {
		return
	}
	var s chainShape
	s.ldc, s.aks, s.ldb, s.k, s.ablock = 4*ldo, 4*aks, 4*ldb, k, 16*ars
	full := (i1 - i0) / 4
	for j := 0; j < n; j += width {
		panel(&s, min(width, n-j))
		if full > 0 {
			s.rows, s.blocks = 4, full
			s.a1, s.a2, s.a3 = 4*ars, 8*ars, 12*ars
			tile(&out[i0*ldo+j], &a[i0*ars], &b[j], &s)
		}
		if i := i0 + 4*full; i < i1 {
			rows := i1 - i
			s.rows, s.blocks = rows, 1
			s.a1, s.a2, s.a3 = 4*ars*min(1, rows-1), 4*ars*min(2, rows-1), 4*ars*min(3, rows-1)
			tile(&out[i*ldo+j], &a[i*ars], &b[j], &s)
		}
	}
}

// dotRowsAsm runs dotTile over rows [i0, i1) in tiles of four rows of A by
// four rows of B, B's rows outside so that they stay in cache across A's.
func dotRowsAsm(i0, i1, n, k int, a []float32, lda int, b []float32, ldb int, out []float32, ldo int) {
	var s dotShape
	s.blocks, s.tail = k/16, uint64(laneMask(k%16))
	var res [16]float32
	for j := 0; j < n; j += 4 {
		cols := min(4, n-j)
		s.b1, s.b2, s.b3 = 4*ldb*min(1, cols-1), 4*ldb*min(2, cols-1), 4*ldb*min(3, cols-1)
		for i := i0; i < i1; i += 4 {
			rows := min(4, i1-i)
			s.a1, s.a2, s.a3 = 4*lda*min(1, rows-1), 4*lda*min(2, rows-1), 4*lda*min(3, rows-1)
			dotTile(&res, &a[i*lda], &b[j*ldb], &s)
			for r := range rows {
				copy(out[(i+r)*ldo+j:(i+r)*ldo+j+cols], res[4*r:4*r+cols])
			}
		}
	}
}

// chainRowsAVX2 runs chainTile2 over rows [i0, i1) in panels of sixteen
// columns.
func chainRowsAVX2(i0, i1, n, k int, a []float32, ars, aks int, b []float32, ldb int, out []float32, ldo int) {
	var masks [16]int32
	chainPanels(i0, i1, n, k, a, ars, aks, b, ldb, out, ldo, 16, func(s *chainShape, w int) {
		laneVector(&masks, w)
		s.full = 0
		if w == 16 {
			s.full = 1
		}
	},
		func(c, a, b *float32, s *chainShape) { chainTile2(c, a, b, s, &masks) })
}

// dotRowsAVX2 is dotRowsAsm with dotTile2, in tiles of two rows by two.
func dotRowsAVX2(i0, i1, n, k int, a []float32, lda int, b []float32, ldb int, out []float32, ldo int) {
	var s dotShape
	s.blocks, s.tail = k/16, uint64(k%16)
	var tail [16]int32
	laneVector(&tail, k%16)
	var res [4]float32
	for j := 0; j < n; j += 2 {
		cols := min(2, n-j)
		s.b1 = 4 * ldb * min(1, cols-1)
		for i := i0; i < i1; i += 2 {
			rows := min(2, i1-i)
			s.a1 = 4 * lda * min(1, rows-1)
			dotTile2(&res, &a[i*lda], &b[j*ldb], &s, &tail)
			for r := range rows {
				copy(out[(i+r)*ldo+j:(i+r)*ldo+j+cols], res[2*r:2*r+cols])
			}
		}
	}
}

// laneVector sets the first w of v's sixteen lanes to all ones, the rest
// to zero (w clamped to [0, 16]).
func laneVector(v *[16]int32, w int) {
	for l := range v {
		v[l] = 0
		if l < w {
			v[l] = -1
		}
	}
}

// laneMask has the low w of sixteen bits set (w clamped to [0, 16]).
func laneMask(w int) uint16 {
	w = max(0, min(16, w))
	return uint16(1<<w - 1)
}

// chainShape is chainTile's layout, offsets in bytes: C's row stride, A's
// rows 1–3 from row 0 (the last row repeated where the block has fewer),
// A's step in k, B's row stride, k, the rows to store of each block, four
// 16-bit lane masks for the four column vectors, the blocks, A's step
// from one block to the next, and (chainTile2) whether the panel is full
// (1: its masks are all ones).
type chainShape struct {
	ldc, a1, a2, a3, aks, ldb, k, rows int
	masks                              uint64
	blocks, ablock                     int
	full                               int
}

// dotShape is dotTile's layout: A's and B's rows 1–3 from row 0 in bytes,
// the full sixteen-lane blocks of k, and the lanes of the last, partial
// one (0 without).
type dotShape struct {
	a1, a2, a3, b1, b2, b3, blocks int
	tail                           uint64
}
