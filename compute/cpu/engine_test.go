package cpu

import (
	"math/rand/v2"
	"os"
	"testing"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/enginetest"
)

func TestEngineOpenBLAS(t *testing.T) {
	e := New(Options{Threads: 2})
	if e.Name() != "cpu/openblas" {
		if os.Getenv("CI") != "" || os.Getenv("REQUIRE_OPENBLAS") == "1" {
			t.Fatalf("engine is %s; OpenBLAS must load here (apt-get install libopenblas0-pthread)", e.Name())
		}
		t.Skip("OpenBLAS not installed")
	}
	if e.Describe().CoreType == "" {
		t.Error("OpenBLAS core type not reported")
	}
	enginetest.Run(t, e)
}

func TestEngineGonum(t *testing.T) {
	e := New(Options{Threads: 2, Gonum: true})
	if e.Name() != "cpu/gonum" {
		t.Fatalf("Gonum option ignored: %s", e.Name())
	}
	enginetest.Run(t, e)
}

func benchmarkSgemm(b *testing.B, e *Engine, m, n, k int) {
	r := rand.New(rand.NewPCG(1, 1))
	a := make([]float32, m*k)
	w := make([]float32, n*k)
	c := make([]float32, m*n)
	for i := range a {
		a[i] = float32(r.NormFloat64())
	}
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Sgemm(false, true, m, n, k, 1, a, k, w, k, 0, c, n)
	}
	b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkSgemmOpenBLASLayer1(b *testing.B) { benchmarkSgemm(b, New(Options{}), 256, 300, 784) }
func BenchmarkSgemmOpenBLAS1024(b *testing.B)   { benchmarkSgemm(b, New(Options{}), 1024, 1024, 1024) }
func BenchmarkSgemmGonumLayer1(b *testing.B) {
	benchmarkSgemm(b, New(Options{Gonum: true}), 256, 300, 784)
}

// TestParallelGemms: many small products run on the threads whole give
// each product's bits as Sgemm on one thread does, on OpenBLAS and on
// gonum, with and without the standing pool; an engine without the method
// gets one range and its own Sgemm.
func TestParallelGemms(t *testing.T) {
	const count, m, n, k = 12, 37, 29, 41
	r := rand.New(rand.NewPCG(4, 5))
	a, b := make([]float32, count*m*k), make([]float32, count*n*k)
	for i := range a {
		a[i] = float32(r.NormFloat64())
	}
	for i := range b {
		b[i] = float32(r.NormFloat64())
	}
	for _, opts := range []Options{{Threads: 2}, {Threads: 2, Gonum: true}, {Threads: 2, Spin: 1000}} {
		e, one := New(opts), New(Options{Threads: 1, Gonum: opts.Gonum})
		want, got := make([]float32, count*m*n), make([]float32, count*m*n)
		for i := range count {
			one.Sgemm(false, true, m, n, k, 0.5, a[i*m*k:], k, b[i*n*k:], k, 0, want[i*m*n:], n)
		}
		ranges := 0
		compute.ParallelGemms(e, count, 1, func(lo, hi int, gemm compute.Gemm) {
			for i := lo; i < hi; i++ {
				gemm(false, true, m, n, k, 0.5, a[i*m*k:], k, b[i*n*k:], k, 0, got[i*m*n:], n)
			}
		})
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%+v: product %d element %d: %v, one thread's %v", opts, i/(m*n), i%(m*n), got[i], want[i])
			}
		}
		compute.ParallelGemms(struct{ compute.Engine }{e}, count, 1, func(lo, hi int, gemm compute.Gemm) {
			if lo != 0 || hi != count {
				t.Errorf("an engine without ParallelGemms: range [%d, %d)", lo, hi)
			}
			ranges++
		})
		if ranges != 1 {
			t.Fatalf("an engine without ParallelGemms: %d ranges", ranges)
		}
	}
}
