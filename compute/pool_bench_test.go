package compute

import (
	"testing"
	"time"
)

var sinks [64]float64

// work is about a microsecond of arithmetic per item.
func work(lo, hi int) {
	s := 0.0
	for i := lo * 1000; i < hi*1000; i++ {
		s += float64(i) * 1e-9
	}
	sinks[lo%len(sinks)] = s
}

// BenchmarkPool: a loop of 20 items of about a microsecond each, serial,
// split over two threads by the pool and by goroutines started per loop,
// and an empty loop's round trip through the pool.
func BenchmarkPool(b *testing.B) {
	p := NewPool(2, 50*time.Microsecond)
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			work(0, 20)
		}
	})
	b.Run("pool", func(b *testing.B) {
		for b.Loop() {
			p.ParallelFor(20, 1, work)
		}
	})
	b.Run("goroutines", func(b *testing.B) {
		for b.Loop() {
			ParallelFor(2, 20, 1, work)
		}
	})
	b.Run("empty", func(b *testing.B) {
		for b.Loop() {
			p.ParallelFor(2, 1, func(lo, hi int) {})
		}
	})
}
