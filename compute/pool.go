package compute

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool runs ParallelFor's ranges on threads−1 standing workers instead of
// a goroutine started per loop: a worker that finishes a range spins for
// up to spin waiting for the next one before it sleeps, so a loop of a few
// microseconds (a convolution of one image) reaches it in well under one,
// where waking a sleeping thread takes several. The split is ParallelFor's,
// range for range. A Pool runs one loop at a time (a loop started inside
// one gets goroutines of its own); its workers end once the Pool is
// garbage.
type Pool struct {
	threads int
	spin    time.Duration
	mu      sync.Mutex
	workers []*poolWorker
	// yield: fewer processors than threads, so a spinning thread gives
	// its processor up between checks.
	yield bool
}

// poolWorker is a worker's state: a cache line the poster writes (the
// range and its count) and one the worker writes (the count done), so a
// loop moves each line between the cores once each way.
type poolWorker struct {
	_        [64]byte
	posted   atomic.Uint64 // ranges posted to this worker
	fn       func(lo, hi int)
	lo, hi   int
	sleeping atomic.Bool
	_        [64]byte
	done     atomic.Uint64 // ranges it finished
	_        [56]byte
	wake     chan struct{}
	quit     chan struct{} // closed when the pool is garbage
}

// NewPool returns a pool of threads (the calling goroutine and threads−1
// workers) that spin for up to spin between loops.
func NewPool(threads int, spin time.Duration) *Pool {
	p := &Pool{threads: threads, spin: spin, yield: runtime.GOMAXPROCS(0) < threads}
	for range threads - 1 {
		w := &poolWorker{wake: make(chan struct{}, 1), quit: make(chan struct{})}
		p.workers = append(p.workers, w)
		go w.run(spin, p.yield) // the pool itself stays unreferenced
	}
	runtime.AddCleanup(p, func(ws []*poolWorker) {
		for _, w := range ws {
			close(w.quit)
		}
	}, p.workers)
	return p
}

// Threads is the pool's thread count.
func (p *Pool) Threads() int { return p.threads }

// ParallelFor is the package's ParallelFor on the pool's threads.
func (p *Pool) ParallelFor(n, minChunk int, fn func(lo, hi int)) {
	minChunk = max(minChunk, 1)
	parts := min(p.threads, n/minChunk)
	if parts <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	if !p.mu.TryLock() { // a loop inside a loop's range: goroutines of its own
		ParallelFor(p.threads, n, minChunk, fn)
		return
	}
	defer p.mu.Unlock()
	step := (n + parts - 1) / parts
	posted := 0
	for lo := step; lo < n; lo += step {
		w := p.workers[posted]
		w.fn, w.lo, w.hi = fn, lo, min(lo+step, n)
		posted++
		w.posted.Add(1)
		if w.sleeping.Load() {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
	fn(0, min(step, n))
	for _, w := range p.workers[:posted] {
		want := w.posted.Load()
		for spins := 0; w.done.Load() != want; spins++ {
			if p.yield || spins > 1<<16 {
				runtime.Gosched() // a worker may need this thread's processor
			}
		}
	}
}

// run is a worker: wait for a range (spinning, then asleep), run it, mark
// it done.
func (w *poolWorker) run(spin time.Duration, yield bool) {
	var seen uint64
	for {
		start := time.Now()
		for spins := 0; w.posted.Load() == seen; spins++ {
			if spins%256 != 255 {
				continue
			}
			if time.Since(start) < spin {
				if yield {
					runtime.Gosched()
				}
				continue
			}
			w.sleeping.Store(true)
			if w.posted.Load() == seen { // posted before it could see the flag: no wake comes
				select {
				case <-w.wake:
				case <-w.quit:
					return
				}
			}
			w.sleeping.Store(false)
			start = time.Now()
		}
		seen++
		fn := w.fn
		w.fn = nil // nothing kept alive between loops
		fn(w.lo, w.hi)
		w.done.Store(seen)
	}
}
