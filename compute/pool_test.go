package compute

import (
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// ranges records the ranges a ParallelFor-like call hands out.
func ranges(par func(n, minChunk int, fn func(lo, hi int)), n, minChunk int) [][2]int {
	var mu sync.Mutex
	var got [][2]int
	par(n, minChunk, func(lo, hi int) {
		mu.Lock()
		got = append(got, [2]int{lo, hi})
		mu.Unlock()
	})
	slices.SortFunc(got, func(a, b [2]int) int { return a[0] - b[0] })
	return got
}

// TestPoolSplitsAsParallelFor: the pool hands out ParallelFor's ranges,
// loop after loop — including after its workers fell asleep — and a loop
// started inside a range completes too.
func TestPoolSplitsAsParallelFor(t *testing.T) {
	for _, threads := range []int{2, 3, 4} {
		p := NewPool(threads, 20*time.Microsecond)
		for round := range 3 {
			for _, tc := range [][2]int{{0, 1}, {1, 1}, {7, 1}, {100, 1}, {100, 40}, {5, 2}} {
				n, chunk := tc[0], tc[1]
				want := ranges(func(n, c int, fn func(lo, hi int)) { ParallelFor(threads, n, c, fn) }, n, chunk)
				if got := ranges(p.ParallelFor, n, chunk); !slices.Equal(got, want) {
					t.Fatalf("threads %d, n %d, chunk %d: pool ranges %v, ParallelFor's %v", threads, n, chunk, got, want)
				}
			}
			if round == 1 {
				time.Sleep(5 * time.Millisecond) // every worker asleep
			}
		}
		var mu sync.Mutex
		sum := 0
		p.ParallelFor(4, 1, func(lo, hi int) {
			p.ParallelFor(10, 1, func(lo, hi int) {
				mu.Lock()
				sum += hi - lo
				mu.Unlock()
			})
		})
		outer := ranges(func(n, c int, fn func(lo, hi int)) { ParallelFor(threads, n, c, fn) }, 4, 1)
		if want := 10 * len(outer); sum != want {
			t.Fatalf("threads %d: nested loops covered %d items, want %d", threads, sum, want)
		}
	}
}

// TestPoolWorkersEndWithThePool: once a pool is garbage, its sleeping
// workers return.
func TestPoolWorkersEndWithThePool(t *testing.T) {
	before := runtime.NumGoroutine()
	p := NewPool(5, time.Microsecond)
	p.ParallelFor(10, 1, func(lo, hi int) {})
	if n := runtime.NumGoroutine(); n < before+4 {
		t.Fatalf("%d goroutines with a pool of 4 workers, %d before", n, before)
	}
	p = nil
	for range 200 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		if runtime.NumGoroutine() <= before {
			return
		}
	}
	t.Fatalf("%d goroutines after the pool was dropped, %d before", runtime.NumGoroutine(), before)
}
