package compute

import "sync"

// Engine runs the numeric kernels of lathe's project ops.
//
// An Engine is safe for use by one goroutine at a time; gorgonia's
// TapeMachine runs ops sequentially, which is the only caller.
type Engine interface {
	// Name identifies the engine and its backend, e.g. "cpu/openblas".
	Name() string

	// Sgemm computes C = alpha·op(A)·op(B) + beta·C where op(X) is X or Xᵀ,
	// op(A) is m×k, op(B) is k×n and C is m×n, all row-major with the given
	// leading dimensions. With beta == 0, C is overwritten (its old contents,
	// NaN included, are ignored).
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)

	// Parallel calls fn over [0, n) split into at most Threads() contiguous
	// ranges of at least grain items (or serially, when the engine judges a
	// second thread would cost more than it saves) and returns when all calls
	// have returned. A kernel must write disjoint outputs per range and must
	// not depend on how [0, n) was split, so its results are the same bits
	// whatever the split.
	Parallel(n, grain int, fn func(lo, hi int))

	// Threads is the number of threads the engine computes with.
	Threads() int
}

// Gemm is Engine.Sgemm's signature.
type Gemm func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)

// ParallelGemmer is implemented by engines that run many small products
// at once: ParallelGemms calls fn over [0, n) split as Parallel does, each
// range given a Gemm that computes on that range's goroutine alone (safe
// from several ranges at once). An attention layer's products, one per
// sample and head, then share the threads whole instead of each being
// split across them. A product's bits do not depend on the split.
type ParallelGemmer interface {
	ParallelGemms(n, grain int, fn func(lo, hi int, gemm Gemm))
}

// ParallelGemms is eng's ParallelGemms, or fn over all of [0, n) with
// eng.Sgemm on the calling goroutine for an engine without one.
func ParallelGemms(eng Engine, n, grain int, fn func(lo, hi int, gemm Gemm)) {
	if p, ok := eng.(ParallelGemmer); ok {
		p.ParallelGemms(n, grain, fn)
		return
	}
	if n > 0 {
		fn(0, n, eng.Sgemm)
	}
}

// Info describes an engine for manifests and logs.
type Info struct {
	Engine   string `json:"engine"`
	BLAS     string `json:"blas"`
	CoreType string `json:"blas_core_type,omitempty"`
	Threads  int    `json:"threads"`
}

// Describer is implemented by engines that can describe their backend.
type Describer interface {
	Describe() Info
}

// ParallelFor splits [0, n) into at most threads contiguous ranges of nearly
// equal size and runs fn on each, the first range on the calling goroutine.
// Ranges smaller than minChunk are merged so that tiny loops stay serial.
func ParallelFor(threads, n, minChunk int, fn func(lo, hi int)) {
	if minChunk < 1 {
		minChunk = 1
	}
	parts := threads
	if maxParts := n / minChunk; maxParts < parts {
		parts = maxParts
	}
	if parts <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	step := (n + parts - 1) / parts
	for lo := step; lo < n; lo += step {
		hi := min(lo+step, n)
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, hi)
	}
	fn(0, min(step, n))
	wg.Wait()
}
