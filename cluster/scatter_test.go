package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/trainer"
)

// TestOthersRangesTravelWhileComputing: a worker's Compute reports the
// others' ranges finished (in pieces, the last first) and then does not
// return until each other worker holds every part of its range from it —
// over the peer plane and through NATS. A replica that sent the partial
// only when Compute returned would never get there; the steps still
// reduce to the exact sum.
func TestOthersRangesTravelWhileComputing(t *testing.T) {
	defer func(old int) { PartElems = old }(PartElems)
	PartElems = 97
	const n, shards = 5000, 6
	want := exactSum(n, shards)
	members := []string{"a", "b", "c"}
	for _, plane := range []string{PlaneAuto, PlaneNATS} {
		_, conn := embedded(t)
		j := newPeerJob(t, conn, []byte("job secret"), members, shards, plane, nil)
		j.each(t, func(ctx context.Context, name string, r *Replica) error {
			for s := range int64(3) {
				f := trainer.Step{Compute: func(ks []int, into []int64, fresh bool, fin *trainer.Finishing) error {
					clear(into)
					if err := shardAdder(0)(ks, into); err != nil || name == coordinatorName {
						return err
					}
					if fin == nil {
						return fmt.Errorf("%s, step %d: no Finishing for a worker's Compute", name, s)
					}
					var others [][2]int
					for k, o := range members {
						if o != name {
							lo, hi := chunk(n, len(members), k)
							others = append(others, [2]int{lo, hi})
						}
					}
					for _, c := range slices.Backward(others) {
						third := (c[1] - c[0]) / 3
						fin.Done(c[0]+2*third, c[1])
						fin.Done(c[0], c[0]+third)
						fin.Done(c[0]+third, c[0]+2*third)
					}
					if err := heldByOthers(ctx, j, name, members, n, s); err != nil {
						return fmt.Errorf("plane %s: %w", plane, err)
					}
					fin.Done(fin.Lo, fin.Hi)
					return nil
				}}
				v, _, err := r.Reduce(ctx, s, n, f)
				if err != nil {
					return err
				}
				if !slices.Equal(v, want) {
					return fmt.Errorf("plane %s: %s, step %d: not the exact sum", plane, name, s)
				}
			}
			return nil
		})
	}
}

// heldByOthers waits, up to ten seconds, until every other member holds
// every part of its range of from's partial of step (generation 1, n
// elements).
func heldByOthers(ctx context.Context, j *peerJob, from string, members []string, n int, step int64) error {
	deadline := time.Now().Add(10 * time.Second)
	for k, o := range members {
		if o == from {
			continue
		}
		lo, hi := chunk(n, len(members), k)
		r := j.reps[o]
		for {
			r.mu.Lock()
			p := r.partials[key{from, 1, step}]
			ok := p != nil && p.covers(lo, hi, r.partElems(8))
			r.mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("step %d: %s does not hold %s's range [%d, %d) while %s still computes", step, o, from, lo, hi, from)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// TestVectorShorterThanTheWorkers: with fewer elements than workers a
// worker's chunk is empty; its owner still gets the (empty) part that says
// the others' partials of it are in (no resend asked), and every step
// reduces exactly.
func TestVectorShorterThanTheWorkers(t *testing.T) {
	_, conn := embedded(t)
	const n, shards = 2, 6
	j := newPeerJob(t, conn, []byte("job secret"), []string{"a", "b", "c"}, shards, PlaneAuto, nil)
	j.run(t, 3, exactSum(n, shards), shardAdder(0))
	for _, name := range j.names {
		if st := j.reps[name].Stats(); st.Resends != 0 {
			t.Errorf("%s asked for %d resends: an empty range's part did not go out", name, st.Resends)
		}
	}
}
