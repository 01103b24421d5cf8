package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/trainer"
)

// shapedNet is an in-memory data plane whose ends have full-duplex links
// of one bandwidth and latency: a part leaves its sender's link after the
// parts queued before it (egress serialized; one copy per receiver, as the
// peer plane sends), arrives latency later, and passes its receiver's
// link after the parts that came before it (ingress serialized: what a
// coordinator that every worker sends to waits on).
type shapedNet struct {
	bytesPerSec float64
	latency     time.Duration
	mu          sync.Mutex
	ends        map[string]*shapedEnd
	inflight    sync.WaitGroup
}

type shapedEnd struct {
	net     *shapedNet
	name    string
	out, in time.Time // when the link's egress and ingress are free
	sent    int64     // bytes sent
	sink
}

func (n *shapedNet) end(name string) *shapedEnd {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := &shapedEnd{net: n, name: name}
	n.ends[name] = e
	return e
}

func (e *shapedEnd) send(to []string, p part) []string {
	n := e.net
	wire := time.Duration(float64(len(p.data)+frameHead) / n.bytesPerSec * float64(time.Second))
	for _, o := range to {
		n.mu.Lock()
		dst := n.ends[o]
		now := time.Now()
		e.out = later(e.out, now).Add(wire)
		dst.in = later(dst.in, e.out.Add(n.latency)).Add(wire)
		at := dst.in
		e.sent += int64(len(p.data) + frameHead)
		n.mu.Unlock()
		q := p
		q.data = slices.Clone(p.data) // the sender's buffer is reused once send returns
		n.inflight.Add(1)
		time.AfterFunc(at.Sub(now), func() {
			defer n.inflight.Done()
			if rcv := dst.get(); rcv != nil {
				rcv.deliver(e.name, q)
			}
		})
	}
	return nil
}

// cpuSeconds is the CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// BenchmarkShapedScaling measures the peer plane's step on a simulated
// cluster: N workers and the coordinator in this process, each with a
// link of a bandwidth and a latency (shapedNet), computing the 32
// micro-shards of a global batch between them — compute stood in for by
// the measured time of one LeNet-300-100 micro-shard of 16 samples on one
// core (0.5 ms) — and reducing LeNet-300-100's vector (266 610 values, its
// gradients' fixed-point partials in narrow parts, the updated chunks in
// float32). Time is dilated 1000×: links 1000× slower, compute, latency
// and the resend timeout 1000× longer, so that the exchange's own CPU on
// this machine (every replica shares two cores) stays a small part of a
// step; the reported times are divided back. It reports the step time, the
// bytes each worker sends per step, the scaling efficiency (the step time
// of perfect scaling, one worker's compute over N, over the measured
// one), and the process's CPU seconds per dilated step, which says how
// much of the step the simulation's own work may have taken.
//
//	go test ./cluster -run '^$' -bench ShapedScaling -benchtime 3x -timeout 30m
func BenchmarkShapedScaling(b *testing.B) {
	const (
		n        = 266610
		shards   = 32
		dilation = 1000
		perShard = 500 * time.Microsecond
		latency  = 50 * time.Microsecond
	)
	// A shard's fixed-point gradient: values of a LeNet-300-100 gradient's
	// magnitude (|g| ≲ 1e-2), the same for every shard (only the time and
	// the encoded widths matter here).
	rng := rand.New(rand.NewPCG(1, 2))
	grad := make([]int64, n)
	for i := range grad {
		grad[i], _ = trainer.ToFixed(float32(rng.NormFloat64() * 2e-3))
	}
	for _, gbit := range []float64{10, 100} {
		for _, workers := range []int{1, 2, 4, 8, 16, 32} {
			b.Run(fmt.Sprintf("%.0fGbit/workers=%d", gbit, workers), func(b *testing.B) {
				_, conn := embedded(b)
				resendAfter(b, ResendAfter*dilation)
				net := &shapedNet{bytesPerSec: gbit * 1e9 / 8 / dilation, latency: latency * dilation, ends: map[string]*shapedEnd{}}
				var members []string
				for i := range workers {
					members = append(members, fmt.Sprintf("w%02d", i))
				}
				j := newDirectJob(b, conn, func(name string) transport { return net.end(name) }, members, shards, PlanePeer)
				b.Cleanup(net.inflight.Wait) // before the replicas close
				names, reps := j.names, j.reps
				compute := func(ks []int, into []int64) error {
					time.Sleep(time.Duration(len(ks)) * perShard * dilation)
					for range ks {
						for i, g := range grad {
							into[i] += g
						}
					}
					return nil
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				steps := int64(b.N) + 1 // the first step (connections, buffers) is not timed
				var start time.Time
				var cpu0 float64
				var wg sync.WaitGroup
				errs := make(chan error, len(names))
				for _, name := range names {
					wg.Add(1)
					go func() {
						defer wg.Done()
						add := compute
						if name == coordinatorName {
							add = nil
						}
						for s := range steps {
							if s == 1 && name == members[0] {
								start, cpu0 = time.Now(), cpuSeconds()
							}
							if _, err := reduce(ctx, reps[name], s, n, add); err != nil {
								errs <- fmt.Errorf("%s: step %d: %w", name, s, err)
								return
							}
						}
					}()
				}
				wg.Wait()
				took, cpu := time.Since(start), cpuSeconds()-cpu0
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				step := took / time.Duration(b.N) / dilation
				net.mu.Lock()
				sent := net.ends[members[0]].sent
				net.mu.Unlock()
				ideal := time.Duration(shards) * perShard / time.Duration(workers)
				b.ReportMetric(float64(step.Microseconds())/1000, "ms/step")
				b.ReportMetric(float64(sent)/float64(steps), "bytes/worker/step")
				b.ReportMetric(float64(ideal)/float64(step), "efficiency")
				b.ReportMetric(cpu/took.Seconds(), "cpu-share")
				var resends int64
				for _, r := range reps {
					resends += r.Stats().Resends
				}
				b.ReportMetric(float64(resends), "resends")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
