package cpu

import (
	"math/rand/v2"
	"os"
	"testing"

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
