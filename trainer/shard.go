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

// updateChunk is Step.Update: it prepares the optimizer's update of the
// parameters in the chunk [lo, hi) — on a copy of the chunk's optimizer
// state, this replica's own when current, else fetched from a replica that
// holds the whole state, kept until the step completes — and returns the
// function that applies it to each part of the chunk as it is reduced.
func (t *Trainer) updateChunk(ctx context.Context, lo, hi int) (func(at int, grad, into []float32) error, error) {
	s := &t.state
	regs := t.regions()
	pieces := make([][]piece, len(regs))
	want := 0
	for r, g := range regs {
		pieces[r] = g.pieces(lo, hi)
		for _, p := range pieces[r] {
			want += g.kinds() * (p.b - p.a)
		}
	}
	// The common case, the chunk of the last step again: the update
	// reads its state and writes the spare buffers (those of the step
	// before), no copy made first.
	pend := t.spare
	t.spare = nil
	from := make([]Optimizer, len(regs))
	var err error
	if c := t.chunk; pend == nil || c == nil || t.wholeState || c.lo != lo || c.hi != hi || pend.lo != lo || pend.hi != hi {
		if pend, err = t.newPending(ctx, regs, pieces, lo, hi, want); err != nil {
			return nil, err
		}
	} else {
		for r, sub := range pend.subs {
			if sub != nil {
				sub.SetSteps(c.subs[r].Steps())
				from[r] = c.subs[r]
			}
		}
	}
	pend.step = s.Step
	steppers := make([]partStepper, len(regs))
	for r, sub := range pend.subs {
		if sub == nil {
			continue
		}
		ps, ok := sub.(partStepper)
		if !ok {
			return nil, fmt.Errorf("trainer: step %d: the optimizer cannot update a chunk's parts", s.Step+1)
		}
		sub.SetSteps(sub.Steps() + 1) // the parts' updates are this step's
		steppers[r] = ps
	}
	t.pending = pend
	copy(s.Grads, t.pgrads)
	whole := t.wholeUpdate()
	if !whole {
		s.ExtraLoss, t.extraDone = 0, true // no policy adds a term
	}
	inv := float32(t.cfg.Parallel.MicroShards())
	return func(at int, grad, into []float32) error {
		if at < lo || at+len(grad) > hi || len(into) != len(grad) || whole && (at != lo || len(grad) != hi-lo) {
			return fmt.Errorf("trainer: step %d: an update of [%d, %d) in the chunk [%d, %d)", s.Step+1, at, at+len(grad), lo, hi)
		}
		// The part's share of each piece: [x0, x1) of the chunk, [a, b) of
		// the piece's tensor, grad[x0-d : x1-d] and into's same range. The
		// values no piece covers are copied as they are.
		d := at - lo
		var covered [][2]int
		each := func(fn func(r, j int, p piece, a, b int, grad, into []float32)) {
			for r := range regs {
				for j, p := range pieces[r] {
					x0, x1 := max(p.at, d), min(p.at+p.b-p.a, d+len(grad))
					if x0 < x1 {
						fn(r, j, p, p.a+x0-p.at, p.a+x1-p.at, grad[x0-d:x1-d], into[x0-d:x1-d])
					}
				}
			}
		}
		each(func(r, _ int, p piece, a, b int, grad, into []float32) {
			divide(regs[r].grads[p.i][a:b], grad, inv)
			covered = append(covered, [2]int{a - p.a + p.at - d, b - p.a + p.at - d})
		})
		copyUncovered(into, grad, covered)
		if whole {
			// The policies' extra terms add to the whole gradient: the chunk
			// is one part.
			extra, err := t.extraLoss()
			if err != nil {
				return err
			}
			s.ExtraLoss, t.extraDone = extra, true
		}
		// The update reads the parameters (their gradients were divided
		// out above) and writes the updated values to into's ranges.
		each(func(r, j int, p piece, a, b int, _, into []float32) {
			g := regs[r]
			var mask []byte
			if g.masks != nil && g.masks[p.i] != nil {
				mask = g.masks[p.i][a:b]
			}
			steppers[r].stepPart(j, a-p.a, into, g.params[p.i][a:b], g.grads[p.i][a:b], mask, float32(s.LR), from[r])
		})
		return nil
	}, nil
}

// copyUncovered copies into dst the elements of src that none of the
// ranges covered (each [lo, hi) of both) holds.
func copyUncovered(dst, src []float32, covered [][2]int) {
	if len(covered) == 0 {
		copy(dst, src)
		return
	}
	slices.SortFunc(covered, func(x, y [2]int) int { return x[0] - y[0] })
	at := 0
	for _, c := range covered {
		if c[0] > at {
			copy(dst[at:c[0]], src[at:c[0]])
		}
		at = max(at, c[1])
	}
	copy(dst[at:], src[at:])
}

// wholeUpdate reports whether a chunk's owner updates the chunk in one
// part: a policy's extra loss term adds to the whole gradient, so every
// part's gradients must be in before it runs.
func (t *Trainer) wholeUpdate() bool {
	for _, p := range t.cfg.Policies {
		if _, ok := p.(ExtraLosser); ok {
			return true
		}
	}
	return false
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
