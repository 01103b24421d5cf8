package trainer

import (
	"context"
	"fmt"
	"slices"
)

// holds reports whether this replica's optimizer state of [lo, hi) of the
// reduced vector is current: the whole state is until the replica updates
// a chunk (every replica starts from the same state); then the state of
// the chunk it updated last is; none is after the model is rebuilt or a
// step it did not update.
func (t *Trainer) holds(lo, hi int) bool {
	return t.wholeState || t.chunk != nil && t.chunk.lo <= lo && hi <= t.chunk.hi
}

// region is a run of the reduced vector holding the gradients of tensors
// one optimizer updates: the model's parameters, or the hint's projection.
type region struct {
	opt    Optimizer
	params [][]float32
	grads  [][]float32
	masks  [][]byte // nil, or per tensor (nil: unmasked)
	off    []int    // each tensor's offset in the vector
}

// piece is the part [a, b) of a region's tensor i that falls in a range
// of the vector, at offset at from the range's start.
type piece struct{ i, a, b, at int }

func (g *region) pieces(lo, hi int) []piece {
	var ps []piece
	for i, p := range g.params {
		a, b := max(lo-g.off[i], 0), min(hi-g.off[i], len(p))
		if a < b {
			ps = append(ps, piece{i, a, b, g.off[i] + a - lo})
		}
	}
	return ps
}

// kinds is how many state buffers the region's optimizer keeps per
// tensor (its State lists them kind by kind, tensor by tensor).
func (g *region) kinds() int {
	if len(g.params) == 0 {
		return 0
	}
	return len(g.opt.State()) / len(g.params)
}

// pendingUpdate is a chunk's update computed by Step.Update; when its step
// completes, its optimizers' state is the replica's.
type pendingUpdate struct {
	step   int64
	lo, hi int
	subs   []Optimizer // per region; nil where the chunk has none of it
}

// regions are the vector's parameter regions for the current model.
func (t *Trainer) regions() []*region {
	l := t.layout()
	t.gradBuffers()
	s := &t.state
	rs := []*region{{opt: t.cfg.Optimizer, params: s.Params, grads: t.pgrads, masks: s.Masks, off: l.params}}
	if l.proj >= 0 {
		rs = append(rs, &region{opt: t.cfg.Hint.Optimizer, params: [][]float32{t.proj.Float32s()}, grads: [][]float32{t.projGradPar}, off: []int{l.proj}})
	}
	return rs
}

// gradBuffers sizes the buffers the reduced gradients are written to.
func (t *Trainer) gradBuffers() {
	if len(t.pgrads) != len(t.cfg.Model.Params) {
		t.pgrads = make([][]float32, len(t.cfg.Model.Params))
	}
	for i, p := range t.cfg.Model.Params {
		if len(t.pgrads[i]) != p.Size() {
			t.pgrads[i] = make([]float32, p.Size())
		}
	}
	if t.proj != nil && len(t.projGradPar) != t.proj.Size() {
		t.projGradPar = make([]float32, t.proj.Size())
	}
}

// moments is the optimizers' state of elements [lo, hi) of the reduced
// vector, region by region, kind by kind, tensor by tensor (Step.Moments):
// from the whole state, or, on a replica that holds its chunk's only, from
// that chunk's.
func (t *Trainer) moments(lo, hi int) []float32 {
	var out []float32
	for r, g := range t.regions() {
		k, ps := g.kinds(), g.pieces(lo, hi)
		if t.wholeState {
			st := g.opt.State()
			for q := range k {
				for _, p := range ps {
					out = append(out, st[q*len(g.params)+p.i][p.a:p.b]...)
				}
			}
			continue
		}
		if len(ps) == 0 {
			continue
		}
		// The chunk's pieces cover the range's (holds).
		cps, cst := g.pieces(t.chunk.lo, t.chunk.hi), t.chunk.subs[r].State()
		for q := range k {
			for _, p := range ps {
				j := slices.IndexFunc(cps, func(c piece) bool { return c.i == p.i })
				c := cps[j]
				out = append(out, cst[q*len(cps)+j][p.a-c.a:p.b-c.a]...)
			}
		}
	}
	return out
}

// updateChunk is Step.Update: the optimizer's update of the parameters in
// the chunk v at lo, from the chunk's reduced gradients (and the policies'
// extra loss terms), computed on copies of the parameters and of the
// chunk's optimizer state — this replica's own when current, else fetched
// from a replica that holds the whole state — and kept until the step
// completes.
func (t *Trainer) updateChunk(ctx context.Context, lo int, v []float32) error {
	s := &t.state
	hi := lo + len(v)
	regs := t.regions()
	pieces := make([][]piece, len(regs))
	inv := float32(t.cfg.Parallel.MicroShards())
	want := 0
	for r, g := range regs {
		k := g.kinds()
		pieces[r] = g.pieces(lo, hi)
		for _, p := range pieces[r] {
			dst := g.grads[p.i][p.a:p.b]
			divide(dst, v[p.at:p.at+len(dst)], inv)
			want += k * len(dst)
		}
	}
	copy(s.Grads, t.pgrads)
	extra, err := t.extraLoss()
	if err != nil {
		return err
	}
	s.ExtraLoss, t.extraDone = extra, true
	// The common case, the chunk of the last step again: the spare
	// buffers (those of the step before) take a copy of its state.
	pend := t.spare
	t.spare = nil
	if c := t.chunk; pend == nil || c == nil || t.wholeState || c.lo != lo || c.hi != hi || pend.lo != lo || pend.hi != hi {
		if pend, err = t.newPending(ctx, regs, pieces, lo, hi, want); err != nil {
			return err
		}
	} else {
		for r, sub := range pend.subs {
			if sub != nil {
				copyState(sub, c.subs[r])
			}
		}
	}
	pend.step = s.Step
	for r, g := range regs {
		sub := pend.subs[r]
		if sub == nil {
			continue
		}
		// The update runs on copies of the parameters in v's ranges (their
		// gradients were divided out above), which it leaves holding the
		// updated values.
		ps := pieces[r]
		params, grads, masks := make([][]float32, len(ps)), make([][]float32, len(ps)), make([][]byte, len(ps))
		for j, p := range ps {
			params[j] = v[p.at : p.at+p.b-p.a]
			copy(params[j], g.params[p.i][p.a:p.b])
			grads[j] = g.grads[p.i][p.a:p.b]
			if g.masks != nil && g.masks[p.i] != nil {
				masks[j] = g.masks[p.i][p.a:p.b]
			}
		}
		sub.Step(params, grads, masks, float32(s.LR))
	}
	t.pending = pend
	return nil
}

// newPending makes the buffers of a chunk's update (the regions' pieces
// of [lo, hi)), with the chunk's optimizer state: this replica's own when
// current, else fetched from a replica that holds the whole state (want
// values).
func (t *Trainer) newPending(ctx context.Context, regs []*region, pieces [][]piece, lo, hi, want int) (*pendingUpdate, error) {
	s := &t.state
	var mom []float32
	var err error
	if t.holds(lo, hi) {
		mom = t.moments(lo, hi)
	} else {
		src, ok := t.cfg.Parallel.(MomentSource)
		if !ok {
			return nil, fmt.Errorf("trainer: step %d: the optimizer state of [%d, %d) is not here, and nothing serves it", s.Step+1, lo, hi)
		}
		if mom, err = src.FetchMoments(ctx, s.Step, lo, hi); err != nil {
			return nil, fmt.Errorf("trainer: step %d: %w", s.Step+1, err)
		}
	}
	if len(mom) != want {
		return nil, fmt.Errorf("trainer: step %d: optimizer state of %d values for [%d, %d), want %d", s.Step+1, len(mom), lo, hi, want)
	}
	pend := &pendingUpdate{lo: lo, hi: hi, subs: make([]Optimizer, len(regs))}
	at := 0
	for r, g := range regs {
		ps := pieces[r]
		if len(ps) == 0 {
			continue
		}
		sizes := make([]int, len(ps))
		for j, p := range ps {
			sizes[j] = p.b - p.a
		}
		st := make([][]float32, 0, g.kinds()*len(ps))
		for range g.kinds() {
			for _, n := range sizes {
				st = append(st, mom[at:at+n])
				at += n
			}
		}
		sub := g.opt.Like(sizes)
		if err := sub.Load(st, g.opt.Steps()); err != nil {
			return nil, fmt.Errorf("trainer: step %d: %w", s.Step+1, err)
		}
		pend.subs[r] = sub
	}
	return pend, nil
}

// copyState copies an optimizer's state and count into another of the
// same sizes.
func copyState(dst, src Optimizer) {
	d, s := dst.State(), src.State()
	for i := range d {
		copy(d[i], s[i])
	}
	dst.SetSteps(src.Steps())
}

// takeUpdated puts a completed step's updated parameters (v, the gathered
// chunks) in place, and keeps the optimizer state of this replica's own
// chunk as its state from now on: the optimizers' whole buffers are given
// up (a replica that updates chunks holds its own chunk's state only). A
// replica that did not update a chunk of the step (it took the step's
// result from another replica) holds no current state from now on.
func (t *Trainer) takeUpdated(v []float32) {
	regs := t.regions()
	for _, g := range regs {
		for i, p := range g.params {
			copy(p, v[g.off[i]:g.off[i]+len(p)])
		}
	}
	p := t.pending
	t.pending = nil
	old := t.chunk
	t.wholeState = false
	if p == nil || p.step != t.state.Step {
		t.chunk = nil
	} else {
		t.chunk = p
		if old != nil && old.lo == p.lo && old.hi == p.hi {
			t.spare = old // the next step's buffers
		}
	}
	for r, g := range regs {
		steps := g.opt.Steps() + 1
		if t.chunk != nil && t.chunk.subs[r] != nil {
			steps = t.chunk.subs[r].Steps()
		}
		if stateSize(g.opt) == 0 {
			g.opt.SetSteps(steps)
			continue
		}
		// Buffers of no elements: the optimizer keeps its kind, its
		// settings and its count, a rebuild's Remap sizes them again.
		o := g.opt.Like(make([]int, len(g.params)))
		o.SetSteps(steps)
		if r == 0 {
			t.cfg.Optimizer = o
		} else {
			t.cfg.Hint.Optimizer = o
		}
	}
}

// stateSize is the number of values an optimizer's state holds.
func stateSize(o Optimizer) int {
	n := 0
	for _, b := range o.State() {
		n += len(b)
	}
	return n
}

// optimizerValues is the number of optimizer state values this trainer
// holds: the whole state's, or its chunk's (and the spare copy the next
// update of the chunk is computed in).
func (t *Trainer) optimizerValues() int {
	n := stateSize(t.cfg.Optimizer)
	if t.cfg.Hint != nil && t.cfg.Hint.Optimizer != nil {
		n += stateSize(t.cfg.Hint.Optimizer)
	}
	for _, c := range []*pendingUpdate{t.chunk, t.spare} {
		if c == nil {
			continue
		}
		for _, o := range c.subs {
			if o != nil {
				n += stateSize(o)
			}
		}
	}
	return n
}
