package compute

import (
	"sync/atomic"
	"testing"
)

func TestParallelForCoversEveryIndexOnce(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		threads, n, minChunk int
	}{
		{"serial", 1, 100, 1},
		{"two", 2, 101, 1},
		{"tiny merged", 8, 10, 64},
		{"empty", 4, 0, 1},
		{"more threads than items", 16, 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := make([]int32, tc.n)
			var calls atomic.Int32
			ParallelFor(tc.threads, tc.n, tc.minChunk, func(lo, hi int) {
				calls.Add(1)
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&hits[i], 1)
				}
			})
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("index %d visited %d times", i, h)
				}
			}
			if int(calls.Load()) > max(tc.threads, 1) {
				t.Fatalf("%d ranges for %d threads", calls.Load(), tc.threads)
			}
		})
	}
}
