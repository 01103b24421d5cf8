package cluster

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lathe-ml/lathe/trainer"
)

// fate is what an in-memory transport does with one part for one
// receiver.
type fate int

const (
	arrive      fate = iota
	lose             // dropped silently, as a lost message: the receiver asks for it again
	unreachable      // send reports the receiver unreached: the sender's fallback carries it
	twice            // delivered twice
	late             // delivered after a while, from another goroutine: after later parts, or after the step moved on
)

// memNet is an in-memory data plane for tests: an end per replica, and a
// fault function that decides each part's fate for each receiver.
type memNet struct {
	mu    sync.Mutex
	ends  map[string]*memEnd
	fault func(from, to string, p part) fate
	fates map[fate]int // how often each fate was dealt
	late  sync.WaitGroup
}

func newMemNet(fault func(from, to string, p part) fate) *memNet {
	return &memNet{ends: map[string]*memEnd{}, fault: fault, fates: map[fate]int{}}
}

// memEnd is one replica's end of a memNet; it implements transport.
type memEnd struct {
	net  *memNet
	name string
	sink
}

func (n *memNet) end(name string) *memEnd {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := &memEnd{net: n, name: name}
	n.ends[name] = e
	return e
}

func (e *memEnd) send(to []string, p part) []string {
	var rest []string
	for _, o := range to {
		e.net.mu.Lock()
		dst, f := e.net.ends[o], arrive
		if e.net.fault != nil {
			f = e.net.fault(e.name, o, p)
		}
		e.net.fates[f]++
		e.net.mu.Unlock()
		if dst == nil || f == unreachable {
			rest = append(rest, o)
			continue
		}
		deliver := func(p part) {
			if rcv := dst.get(); rcv != nil {
				rcv.deliver(e.name, p)
			}
		}
		switch f {
		case lose:
		case twice:
			deliver(p)
			deliver(p)
		case late:
			q := p
			q.data = slices.Clone(p.data) // p.data is the sender's again once send returns
			e.net.late.Add(1)
			go func() {
				defer e.net.late.Done()
				time.Sleep(30 * time.Millisecond)
				deliver(q)
			}()
		default:
			deliver(p)
		}
	}
	return rest
}

// newMemJob starts the replicas of members and the coordinator, each with
// its end of net as its direct transport on plane.
func newMemJob(t *testing.T, conn func(string) *nats.Conn, net *memNet, members []string, shards int, plane string) *peerJob {
	t.Helper()
	j := newDirectJob(t, conn, func(name string) transport { return net.end(name) }, members, shards, plane)
	t.Cleanup(net.late.Wait) // before the replicas close
	return j
}

// newDirectJob starts the replicas of members and the coordinator, each
// with end(its name) as its direct transport on plane.
func newDirectJob(t testing.TB, conn func(string) *nats.Conn, end func(string) transport, members []string, shards int, plane string) *peerJob {
	t.Helper()
	j := &peerJob{reps: map[string]*Replica{}, names: append(slices.Clone(members), coordinatorName)}
	for _, name := range j.names {
		r, err := NewReplica(conn(name), []byte("job secret"), "job", name, 1, shards, 1, members, testLog(t, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		r.useDirect(end(name), plane)
		j.reps[name] = r
	}
	return j
}

// TestReductionIsExactOverAFaultyTransport reduces steps among three
// workers and the coordinator over an in-memory transport that loses,
// duplicates, delays and refuses parts (a fifth of them each, decided by a
// hash of the part, its receiver and how often it was sent): every replica still gets the exact sum
// every step — lost parts are asked for again, refused ones go through
// NATS, duplicates are placed once, late ones are placed or refused as
// stale — and the parts that went through NATS are counted as the
// broker's.
func TestReductionIsExactOverAFaultyTransport(t *testing.T) {
	_, conn := embedded(t)
	resendAfter(t, 100*time.Millisecond)
	const n, shards, steps = 3000, 6, 6
	net := newMemNet(faults())
	j := newMemJob(t, conn, net, []string{"a", "b", "c"}, shards, PlaneAuto)
	j.run(t, steps, exactSum(n, shards), shardAdder(0))
	net.mu.Lock()
	fates := maps.Clone(net.fates)
	net.mu.Unlock()
	for f := arrive; f <= late; f++ {
		if fates[f] == 0 {
			t.Errorf("no part met fate %d: the faults were not exercised (%v)", f, fates)
		}
	}
	var broker, resends int64
	for _, name := range j.names {
		st := j.reps[name].Stats()
		broker += st.BrokerBytesSent
		resends += st.Resends
	}
	if broker == 0 || resends == 0 {
		t.Fatalf("%d bytes through NATS, %d resends asked for: want both, for the refused and the lost parts", broker, resends)
	}
}

// faults deals a fifth of the parts each fate, by a hash of the part, its
// receiver and how often it was sent: a part sent again (asked for) meets
// another fate than the first time.
func faults() func(from, to string, p part) fate {
	tries := map[string]byte{}
	return func(from, to string, p part) fate {
		id := fmt.Sprint(from, ">", to, p.kind, p.md.step, p.md.off)
		tries[id]++
		h := fnv.New32a()
		h.Write([]byte(id))
		h.Write([]byte{tries[id]})
		return fate(h.Sum32() % 5)
	}
}

// TestOneMicroShardTravelsAsFloat32 runs steps whose workers compute one
// micro-shard each (Step.Single, the trainer's float32 gradients in
// segments a part spans): their partials go as float32 (frameRF), are
// converted by the owners, and reduce exactly — through the faulty
// transport's losses (asked for again: resent from the segments),
// duplicates, delays and refusals (through NATS), and over the peer plane
// and NATS alone.
func TestOneMicroShardTravelsAsFloat32(t *testing.T) {
	defer func(old int) { PartElems = old }(PartElems)
	PartElems = 97
	const n, shards, steps = 3000, 3, 5
	members := []string{"a", "b", "c"}
	kinds := map[byte]int{}
	var mu sync.Mutex
	fault := faults()
	net := newMemNet(func(from, to string, p part) fate {
		mu.Lock()
		kinds[p.kind]++
		mu.Unlock()
		return fault(from, to, p)
	})
	want := exactSum(n, shards)
	// The peer plane and NATS first, with the usual wait before a part is
	// asked for again (their bytes are counted: no resends); then the
	// faulty transport, whose lost parts are asked for sooner.
	for _, name := range []string{PlaneAuto, PlaneNATS, "faulty"} {
		_, conn := embedded(t) // a server each: the jobs share names
		var j *peerJob
		if name == "faulty" {
			resendAfter(t, 100*time.Millisecond)
			j = newMemJob(t, conn, net, members, shards, PlaneAuto)
		} else {
			j = newPeerJob(t, conn, []byte("job secret"), members, shards, name, nil)
		}
		var singles atomic.Int64
		j.each(t, func(ctx context.Context, rep string, r *Replica) error {
			for s := range int64(steps) {
				f := singleStep(n, &singles)
				if rep == coordinatorName {
					f = trainer.Step{}
				}
				v, _, err := r.Reduce(ctx, s, n, f)
				if err != nil {
					return err
				}
				if !slices.Equal(v, want) {
					return fmt.Errorf("%s: %s: step %d reduced a different vector", name, rep, s)
				}
			}
			return nil
		})
		if got := singles.Load(); got < int64(len(members))*steps {
			t.Fatalf("%s: %d micro-shards computed with Single, want %d", name, got, len(members)*steps)
		}
		var broker int64
		for _, rep := range members {
			st := j.reps[rep].Stats()
			broker += st.BrokerBytesSent
			// Four bytes a value: the others' chunks' partials and the
			// updated chunk to each of them, the reduced one to the
			// coordinator — 7-byte integers would add 6 000 a step.
			if name != "faulty" && st.BytesSent > steps*(5*(n/3)*4+1000) {
				t.Errorf("%s: %s sent %d bytes in %d steps: more than float32 partials and chunks", name, rep, st.BytesSent, steps)
			}
		}
		if name == PlaneNATS && broker == 0 {
			t.Errorf("nothing went through NATS on the NATS plane")
		}
	}
	if kinds[frameRF] == 0 || kinds[frameRS] != 0 {
		t.Fatalf("parts by kind %v: want float32 partials (%d) only", kinds, frameRF)
	}
}

// singleStep is a worker's step: its micro-shards' contributions added
// in fixed point (Compute), or, one alone, returned as float32 segments of
// uneven sizes with its own chunk converted (Single) — counted in singles.
func singleStep(n int, singles *atomic.Int64) trainer.Step {
	return trainer.Step{
		Compute: func(ks []int, into []int64, fresh bool, _ *trainer.Finishing) error {
			if fresh {
				clear(into)
			}
			return shardAdder(0)(ks, into)
		},
		Single: func(k int) ([][]float32, error) {
			singles.Add(1)
			v := make([]float32, n)
			for i := range v {
				v[i] = contribution(k, i)
			}
			return [][]float32{v[:n/3], v[n/3 : n/3+1], v[n/3+1:]}, nil
		},
	}
}

// TestPeerOnlyPlaneFaultsOnAnUnreachableReplica: on PlanePeer a part the
// direct transport cannot deliver fails the step, naming the replica,
// rather than going through NATS.
func TestPeerOnlyPlaneFaultsOnAnUnreachableReplica(t *testing.T) {
	_, conn := embedded(t)
	net := newMemNet(func(from, to string, p part) fate {
		if to == "b" {
			return unreachable
		}
		return arrive
	})
	j := newMemJob(t, conn, net, []string{"a", "b"}, 2, PlanePeer)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := reduce(ctx, j.reps["a"], 0, 100, shardAdder(0))
	if err == nil || !strings.Contains(err.Error(), "[b]") || !strings.Contains(err.Error(), PlanePeer) {
		t.Fatalf("a's step: %v; want a failure naming b and the plane", err)
	}
	if st := j.reps["a"].Stats(); st.BrokerBytesSent != 0 {
		t.Fatalf("%d bytes through NATS on the peer-only plane", st.BrokerBytesSent)
	}
}

// TestLaggingCoordinatorGetsLostChunksAgain: a worker runs several steps
// ahead of the coordinator, and every reduced chunk it sends the
// coordinator is lost the first time; the coordinator, reducing those
// steps later, asks for each again and gets it — the worker keeps the
// reduced chunks of the steps the coordinator has not completed.
func TestLaggingCoordinatorGetsLostChunksAgain(t *testing.T) {
	_, conn := embedded(t)
	resendAfter(t, 50*time.Millisecond)
	const n, shards, steps = 500, 2, 4
	sent := map[int64]bool{}
	net := newMemNet(func(from, to string, p part) fate {
		if p.kind == frameAG && !sent[p.md.step] {
			sent[p.md.step] = true
			return lose
		}
		return arrive
	})
	j := newMemJob(t, conn, net, []string{"a"}, shards, PlaneAuto)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := exactSum(n, shards)
	if err := reduceSteps(ctx, j.reps["a"], "a", 0, steps, want, shardAdder(0)); err != nil {
		t.Fatal(err)
	}
	if err := reduceSteps(ctx, j.reps[coordinatorName], coordinatorName, 0, steps, want, nil); err != nil {
		t.Fatal(err)
	}
	if st := j.reps[coordinatorName].Stats(); st.Resends < steps {
		t.Fatalf("the coordinator asked %d times for a chunk again, want at least %d", st.Resends, steps)
	}
}

// resendAfter sets ResendAfter to d until the test ends.
func resendAfter(t testing.TB, d time.Duration) {
	old := ResendAfter
	ResendAfter = d
	t.Cleanup(func() { ResendAfter = old })
}
