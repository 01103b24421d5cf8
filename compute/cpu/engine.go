package cpu

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
)

// Options configure an Engine.
type Options struct {
	// Threads is the number of compute threads (BLAS and Go kernels);
	// 0 means runtime.NumCPU().
	Threads int
	// Gonum forces the pure-Go BLAS even when OpenBLAS is present.
	Gonum bool
	// Logger receives the one-time fallback warning; nil discards it.
	Logger hclog.Logger
	// Spin, when set, keeps the Go kernels' threads standing between
	// parallel loops, spinning up to this long for the next one
	// (compute.Pool): lower latency for many short loops — the inference
	// runtime at small batches — at the cost of CPU spent waiting.
	Spin time.Duration
	// Exact computes Sgemm with lathe's own kernels instead of the BLAS,
	// in an order that makes every output a function of its operands
	// alone — whatever the product's shape, the output's place in it, the
	// thread count or the machine (exact.go). A cluster replica's
	// micro-shards then give the same bits however they are grouped.
	Exact bool
}

// Engine is the CPU engine. It is also a gorgonia tensor.Engine (the standard
// one), so a TapeMachine can be given it with gorgonia.WithEngine.
type Engine struct {
	tensor.StdEng
	threads int
	blas    *openBLAS // nil: gonum
	gonum   gonum.Implementation

	lastThreaded time.Time // when a product last used OpenBLAS's threads
	pool         *compute.Pool

	exact   bool      // Options.Exact
	scratch []float32 // the exact product's chains where alpha ≠ 1 or beta ≠ 0
}

var (
	_ compute.Engine         = (*Engine)(nil)
	_ compute.Describer      = (*Engine)(nil)
	_ tensor.Engine          = (*Engine)(nil)
	_ compute.ParallelGemmer = (*Engine)(nil)

	warnOnce sync.Once
)

// New returns a CPU engine. It never fails: without OpenBLAS it uses gonum
// and logs a warning once per process.
func New(opts Options) *Engine {
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	e := &Engine{threads: threads, exact: opts.Exact}
	if opts.Spin > 0 && threads > 1 {
		e.pool = compute.NewPool(threads, opts.Spin)
	}
	if !opts.Gonum {
		lib, err := loadOpenBLAS()
		if err != nil {
			warnOnce.Do(func() {
				log := opts.Logger
				if log == nil {
					log = hclog.NewNullLogger()
				}
				log.Warn("OpenBLAS unavailable, using gonum's pure-Go BLAS (about 30x slower)", "error", err)
			})
		} else {
			e.blas = lib
			e.setBLASThreads(1) // Sgemm sets the count per product
		}
	}
	return e
}

// Name implements compute.Engine.
func (e *Engine) Name() string {
	if e.exact {
		return "cpu/exact"
	}
	if e.blas != nil {
		return "cpu/openblas"
	}
	return "cpu/gonum"
}

// Exact says whether Sgemm is the exact product (Options.Exact).
func (e *Engine) Exact() bool { return e.exact }

// Threads implements compute.Engine.
func (e *Engine) Threads() int { return e.threads }

// Describe implements compute.Describer.
func (e *Engine) Describe() compute.Info {
	if e.exact {
		kernels := "lathe exact GEMM (Go)"
		switch {
		case hasExactAsm:
			kernels = "lathe exact GEMM (AVX-512)"
		case hasExactAVX2:
			kernels = "lathe exact GEMM (AVX2)"
		}
		return compute.Info{Engine: "cpu", BLAS: kernels, Threads: e.threads}
	}
	if e.blas != nil {
		return compute.Info{Engine: "cpu", BLAS: fmt.Sprintf("%s (%s)", e.blas.config, e.blas.path), CoreType: e.blas.coreType, Threads: e.threads}
	}
	return compute.Info{Engine: "cpu", BLAS: "gonum (pure Go)", Threads: e.threads}
}

// Parallel implements compute.Engine. Right after a GEMM that used
// OpenBLAS's own threads, those threads are still spinning (for up to
// OPENBLAS_THREAD_TIMEOUT) and hold the other cores; a Go kernel split across
// threads then only fights them, so it runs on the calling thread instead
// (measured: BENCHMARKS.md).
func (e *Engine) Parallel(n, grain int, fn func(lo, hi int)) {
	if blasN.Load() > 1 && time.Since(e.lastThreaded) < blasSpin {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	if e.pool != nil {
		e.pool.ParallelFor(n, grain, fn)
		return
	}
	compute.ParallelFor(e.threads, n, grain, fn)
}

// blasSpin is how long OpenBLAS's threads keep spinning after a product:
// 2^20 cycles (the OPENBLAS_THREAD_TIMEOUT lathe sets) at ≥ 2 GHz.
const blasSpin = 500 * time.Microsecond

// Sgemm implements compute.Engine. It panics when a slice is too short for
// the stated dimensions.
func (e *Engine) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkMat("a", transA, m, k, a, lda)
	checkMat("b", transB, k, n, b, ldb)
	checkMat("c", false, m, n, c, ldc)
	if e.exact {
		e.exactGemm(true, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if e.blas == nil || k == 0 {
		e.gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ta, tb := cblasOps(transA, transB)
	call := func(m0, m1, n0, n1 int) {
		ao, bo := m0*lda, n0 // row m0 of op(A), column n0 of op(B)
		if transA {
			ao = m0
		}
		if transB {
			bo = n0 * ldb
		}
		ap, bp := &a[ao], &b[bo]
		e.blas.sgemm(cblasRowMajor, ta, tb, int32(m1-m0), int32(n1-n0), int32(k), alpha,
			unsafe.Pointer(ap), int32(lda), unsafe.Pointer(bp), int32(ldb), beta,
			unsafe.Pointer(&c[m0*ldc+n0]), int32(ldc))
	}
	// Two ways to use several threads, chosen by shape (measured on
	// LeNet-300-100 and LeNet-5 steps; BENCHMARKS.md): products whose three
	// dimensions are all moderate go to OpenBLAS's own threads, which share
	// the packed operands; skewed ones (a thin convolution GEMM, a weight
	// gradient reduced over a whole batch of pixels) are split here into
	// row or column blocks run concurrently on single-threaded OpenBLAS.
	// Either way the work partition depends only on the shape and the thread
	// count, so results are run-to-run identical.
	if e.threads == 1 || 2*m*n*k < splitFlops {
		e.setBLASThreads(1)
		call(0, m, 0, n)
		return
	}
	if min(m, n, k) >= 64 {
		e.setBLASThreads(e.threads)
		call(0, m, 0, n)
		e.lastThreaded = time.Now()
		return
	}
	e.setBLASThreads(1)
	if m >= n || m >= 8*e.threads {
		compute.ParallelFor(e.threads, m, 8, func(lo, hi int) { call(lo, hi, 0, n) })
	} else {
		compute.ParallelFor(e.threads, n, 8, func(lo, hi int) { call(0, m, lo, hi) })
	}
}

// ParallelGemms implements compute.ParallelGemmer: OpenBLAS is set to one
// thread before the ranges start, and each range's products run on its
// own goroutine.
func (e *Engine) ParallelGemms(n, grain int, fn func(lo, hi int, gemm compute.Gemm)) {
	if e.blas != nil {
		e.setBLASThreads(1)
	}
	run := func(lo, hi int) { fn(lo, hi, e.serialGemm) }
	if e.pool != nil {
		e.pool.ParallelFor(n, grain, run)
		return
	}
	compute.ParallelFor(e.threads, n, grain, run)
}

// serialGemm is Sgemm on the calling goroutine, OpenBLAS already set to
// one thread.
func (e *Engine) serialGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkMat("a", transA, m, k, a, lda)
	checkMat("b", transB, k, n, b, ldb)
	checkMat("c", false, m, n, c, ldc)
	if e.exact {
		e.exactGemm(false, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	e.gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// gemm is one whole product on the calling goroutine, its operands checked:
// C scaled where k is 0, gonum without OpenBLAS, else one OpenBLAS call.
func (e *Engine) gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if k == 0 {
		scale(c, m, n, ldc, beta)
		return
	}
	if e.blas == nil {
		ta, tb := blas.NoTrans, blas.NoTrans
		if transA {
			ta = blas.Trans
		}
		if transB {
			tb = blas.Trans
		}
		e.gonum.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ta, tb := cblasOps(transA, transB)
	e.blas.sgemm(cblasRowMajor, ta, tb, int32(m), int32(n), int32(k), alpha,
		unsafe.Pointer(&a[0]), int32(lda), unsafe.Pointer(&b[0]), int32(ldb), beta, unsafe.Pointer(&c[0]), int32(ldc))
}

// cblasOps are CBLAS's transposition flags.
func cblasOps(transA, transB bool) (ta, tb int32) {
	ta, tb = cblasNoTrans, cblasNoTrans
	if transA {
		ta = cblasTrans
	}
	if transB {
		tb = cblasTrans
	}
	return ta, tb
}

// blasN is the thread count last given to OpenBLAS: one setting for the
// process, whichever engine made it (a cache per engine would let a second
// engine's products run on the first one's count, and results depend on
// it).
var blasN atomic.Int32

func (e *Engine) setBLASThreads(n int) {
	if blasN.Load() != int32(n) {
		e.blas.setNum(int32(n))
		blasN.Store(int32(n))
	}
}

// splitFlops is the smallest product worth splitting across threads.
const splitFlops = 1 << 20

// checkMat panics unless x holds a rows×cols row-major matrix (stored
// transposed when trans) with leading dimension ld.
func checkMat(name string, trans bool, rows, cols int, x []float32, ld int) {
	if trans {
		rows, cols = cols, rows
	}
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols {
		panic(fmt.Sprintf("cpu: sgemm: %s: leading dimension %d < %d columns", name, ld, cols))
	}
	if need := (rows-1)*ld + cols; len(x) < need {
		panic(fmt.Sprintf("cpu: sgemm: %s: %d elements, need %d", name, len(x), need))
	}
}

func scale(c []float32, m, n, ldc int, beta float32) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		for j := range row {
			if beta == 0 {
				row[j] = 0
			} else {
				row[j] *= beta
			}
		}
	}
}
