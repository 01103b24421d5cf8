package cpu

import (
	"fmt"
	"testing"
)

// BenchmarkLayerGEMMs times the GEMMs of one LeNet-300-100 training step
// at batch 256 (forward, weight gradients, input gradients).
func BenchmarkLayerGEMMs(b *testing.B) {
	type g struct {
		ta, tb  bool
		m, n, k int
	}
	shapes := []g{
		{false, true, 256, 300, 784}, {true, false, 300, 784, 256},
		{false, true, 256, 100, 300}, {true, false, 100, 300, 256}, {false, false, 256, 300, 100},
		{false, true, 256, 10, 100}, {true, false, 10, 100, 256}, {false, false, 256, 100, 10},
	}
	e := New(Options{})
	buf := make([]float32, 1<<20)
	for _, s := range shapes {
		b.Run(fmt.Sprintf("%v%v_%dx%dx%d", s.ta, s.tb, s.m, s.n, s.k), func(b *testing.B) {
			lda, ldb := s.k, s.n
			if s.ta {
				lda = s.m
			}
			if s.tb {
				ldb = s.k
			}
			c := make([]float32, s.m*s.n)
			for i := 0; i < b.N; i++ {
				e.Sgemm(s.ta, s.tb, s.m, s.n, s.k, 1, buf, lda, buf, ldb, 0, c, s.n)
			}
		})
	}
}
