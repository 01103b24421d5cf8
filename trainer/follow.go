package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/lathe-ml/lathe/model"
)

// Follower is a Parallel on which the replica that computes nothing — a
// coordinator that keeps the whole state for evaluation, checkpoints and
// joiners — need not take every step. It follows: between sync points it
// neither reduces nor updates, and at each sync point it takes the state
// the computing replicas hold there, which every one of them has but the
// optimizer state: one replica's snapshot (parameters, masks, observers,
// the policies' state, the counters) and each chunk's optimizer state from
// the replica that updated it. Sync points are every SyncEvery steps, each
// epoch's end and each checkpoint step (Config.CheckpointSteps), so that
// what reads the state there — evaluation, the epoch-end policies, a
// checkpoint — reads the state it would read without following.
type Follower interface {
	Parallel
	// SyncEvery is the number of steps between sync points; 0: the
	// replica that computes nothing reduces every step.
	SyncEvery() int
	// Follows reports whether this replica is the one that follows.
	Follows() bool
	// Offer, on a computing replica at a sync point, hands its state on.
	// The state's slices are the trainer's: Offer copies or encodes what
	// it keeps before it returns.
	Offer(ctx context.Context, st *SyncState) error
	// Take, on the follower, returns the state after step steps (a sync
	// point) once the computing replicas have offered it: a snapshot and
	// chunks that cover the reduced vector. It returns ErrShareFirst when
	// the computing replicas are to restart from the follower's present
	// state (a membership change: Joinable.JoinAt names the present step):
	// the trainer hands that state to Config.ShareState, then takes again.
	// While it waits it serves the optimizer state the follower holds now
	// (f.Moments, of its n-element vector) to computing replicas whose
	// chunks it does not cover — after a rebuilt model (thinning,
	// factorization) at an epoch's start, say.
	Take(ctx context.Context, step int64, n int, f Step) (*SyncState, error)
}

// ErrShareFirst is what Follower.Take returns when the follower's present
// state is to be shared before the next one is taken.
var ErrShareFirst = errors.New("trainer: the follower's state is to be shared first")

// SyncState is the replicas' state at a sync point.
type SyncState struct {
	// Snapshot is a computing replica's: its optimizer buffers hold no
	// values (each replica keeps its own chunk's state only).
	Snapshot *Snapshot
	// LR is the learning rate of the last step (a policy sets it before
	// each step; a checkpoint need not keep it).
	LR float64
	// Chunks are optimizer states of ranges of the reduced vector: on
	// Offer the replica's own chunk (none when it holds no current
	// state), on Take every chunk.
	Chunks []ChunkState
}

// ChunkState is the optimizer state of elements [Lo, Hi) of the reduced
// vector, in Step.Moments' order.
type ChunkState struct {
	Lo, Hi  int
	Moments []float32
}

// follower returns the trainer's Parallel as a Follower when following is
// on (SyncEvery > 0).
func (t *Trainer) follower() Follower {
	if f, ok := t.cfg.Parallel.(Follower); ok && f.SyncEvery() > 0 {
		return f
	}
	return nil
}

// syncPoint reports whether the state after done steps — the last of them
// the epoch's last when epochEnd — is a sync point.
func (t *Trainer) syncPoint(f Follower, done int64, epochEnd bool) bool {
	if epochEnd || done%int64(f.SyncEvery()) == 0 {
		return true
	}
	return t.cfg.CheckpointSteps > 0 && done%int64(t.cfg.CheckpointSteps) == 0
}

// offer hands a computing replica's state at a sync point on: its
// snapshot sn, its learning rate and, when current, its chunk's optimizer
// state.
func (t *Trainer) offer(ctx context.Context, f Follower, sn *Snapshot) error {
	st := &SyncState{Snapshot: sn, LR: t.state.LR}
	if c := t.chunk; c != nil && c.step+1 == t.state.Step {
		st.Chunks = []ChunkState{{Lo: c.lo, Hi: c.hi, Moments: t.moments(c.lo, c.hi)}}
	}
	if err := f.Offer(ctx, st); err != nil {
		return fmt.Errorf("trainer: step %d: offering the state: %w", t.state.Step, err)
	}
	return nil
}

// follow moves the follower from the state before step inEpoch of epoch
// (of steps) to the next sync point: it takes the state there and returns
// the epoch's steps done and the epoch's running sums.
func (t *Trainer) follow(ctx context.Context, f Follower, epoch, inEpoch, steps int) (int, running, error) {
	done := inEpoch + 1
	for ; done < steps && !t.syncPoint(f, t.state.Step+int64(done-inEpoch), false); done++ {
	}
	step := t.state.Step + int64(done-inEpoch)
	st, err := f.Take(ctx, step, t.layout().n, Step{Moments: t.moments})
	if err != nil {
		return 0, running{}, err
	}
	sn := st.Snapshot
	switch {
	case sn == nil:
		return 0, running{}, fmt.Errorf("trainer: step %d: the state taken has no snapshot", step)
	case sn.Step != step || sn.Epoch != epoch || sn.StepInEpoch != done:
		return 0, running{}, fmt.Errorf("trainer: the state taken is of step %d (epoch %d, %d steps in), want %d (epoch %d, %d steps in)",
			sn.Step, sn.Epoch+1, sn.StepInEpoch, step, epoch+1, done)
	case !sameSpec(sn.Spec, t.cfg.Model.Spec):
		return 0, running{}, fmt.Errorf("trainer: step %d: the state taken is of another architecture", step)
	}
	if err := t.takeState(st); err != nil {
		return 0, running{}, fmt.Errorf("trainer: step %d: %w", step, err)
	}
	return done, running{loss: sn.LossSum, extra: sn.ExtraSum, kd: sn.KDSum, correct: sn.Correct, seconds: sn.TrainSeconds}, nil
}

// sameSpec reports whether two architectures are the same (as a
// checkpoint writes them).
func sameSpec(a, b model.Spec) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// takeState puts a sync point's state into the follower: the snapshot's
// parameters, masks, observers, policies' state and counters, and the
// chunks' optimizer state into its whole state. What only the follower
// keeps stays its own: its dropout streams' positions (it runs no dropout).
func (t *Trainer) takeState(st *SyncState) error {
	if _, ok := t.be.(graphBackend); !ok {
		return fmt.Errorf("a replica that follows runs on the CPU")
	}
	sn := *st.Snapshot
	s := &t.state
	if len(sn.Params) != len(s.Params) || len(sn.Masks) != len(s.Masks) {
		return fmt.Errorf("the state taken has %d parameters and %d masks, want %d", len(sn.Params), len(sn.Masks), len(s.Params))
	}
	for i, p := range sn.Params {
		if len(p) != len(s.Params[i]) {
			return fmt.Errorf("parameter %s of %d values, want %d", t.cfg.Model.Params[i].Name, len(p), len(s.Params[i]))
		}
	}
	// The chunks first: nothing is changed when they do not fit.
	n := t.layout().n
	covered := 0
	chunks := slices.Clone(st.Chunks)
	slices.SortFunc(chunks, func(a, b ChunkState) int { return a.Lo - b.Lo })
	for _, c := range chunks {
		if c.Lo != covered || c.Hi <= c.Lo || c.Hi > n {
			return fmt.Errorf("optimizer state of [%d, %d) where [%d, ...) of %d values is due", c.Lo, c.Hi, covered, n)
		}
		if want := t.momentCount(c.Lo, c.Hi); len(c.Moments) != want {
			return fmt.Errorf("optimizer state of [%d, %d): %d values, want %d", c.Lo, c.Hi, len(c.Moments), want)
		}
		covered = c.Hi
	}
	if covered != n {
		return fmt.Errorf("optimizer state of [0, %d) of %d values", covered, n)
	}
	for _, c := range chunks {
		t.putMoments(c.Lo, c.Hi, c.Moments)
	}
	for i, p := range sn.Params {
		copy(s.Params[i], p)
	}
	// Masks keep their buffers where they have one of the right size.
	sn.Masks = slices.Clone(sn.Masks)
	for i, m := range sn.Masks {
		if m != nil && len(s.Masks[i]) == len(m) {
			copy(s.Masks[i], m)
			sn.Masks[i] = s.Masks[i]
		}
	}
	sn.Optimizer = t.cfg.Optimizer.State()
	if t.proj != nil {
		sn.HintOptimizer = t.cfg.Hint.Optimizer.State()
	}
	sn.Dropout = nil
	for _, d := range t.net.Dropouts {
		sn.Dropout = append(sn.Dropout, d.Calls)
	}
	sn.Backend = ""
	if err := t.restore(&sn); err != nil {
		return err
	}
	t.resume = nil
	s.LR = st.LR
	return t.be.push()
}

// momentCount is the number of values moments(lo, hi) returns.
func (t *Trainer) momentCount(lo, hi int) int {
	n := 0
	for _, g := range t.regions() {
		for _, p := range g.pieces(lo, hi) {
			n += g.kinds() * (p.b - p.a)
		}
	}
	return n
}

// putMoments writes vals, the optimizers' state of elements [lo, hi) of
// the reduced vector in moments' order, into the whole state.
func (t *Trainer) putMoments(lo, hi int, vals []float32) {
	at := 0
	for _, g := range t.regions() {
		k, ps := g.kinds(), g.pieces(lo, hi)
		st := g.opt.State()
		for q := range k {
			for _, p := range ps {
				at += copy(st[q*len(g.params)+p.i][p.a:p.b], vals[at:])
			}
		}
	}
}
