package trainer

import (
	"context"
	"fmt"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/internal/graphop"
	"github.com/lathe-ml/lathe/model"
)

// Parallel makes a trainer one replica of data-parallel training whose
// results do not depend on how many replicas compute: each batch is cut
// into MicroShards fixed micro-shards (the same samples, dropout streams and
// seeds whoever computes them), each micro-shard's gradient is turned into
// fixed-point integers (ToFixed), and the sum over all micro-shards — exact
// and independent of order, so of who computes what — is reduced. Each
// replica that owns a chunk of that sum applies the optimizer update to the
// parameters in it (Step.Update), and the updated chunks are gathered: the
// replicas take their parameters from the chunks' owners, and each keeps
// the optimizer state of its own chunk only. A replica that owns nothing (a
// coordinator that keeps the whole state, applies the policies and writes
// the checkpoints) gets the plain sum and applies the whole update itself,
// to the same bits.
type Parallel interface {
	// MicroShards is the number of micro-shards a batch is cut into; it
	// divides the batch.
	MicroShards() int
	// Reduce completes step with the trainer's functions f, and returns
	// the step's vector (length n): the sum over all the step's
	// micro-shards, each element converted by FromFixed — with, when
	// updated is true, the parameters after the step's update (Update's
	// results) in place of their gradients.
	Reduce(ctx context.Context, step int64, n int, f Step) (v []float32, updated bool, err error)
}

// Step is the trainer's side of a data-parallel step.
type Step struct {
	// Compute adds the fixed-point vectors (length n) of the micro-shards
	// given to into — or, when fresh, puts their sum in place of what into
	// holds (Reduce need not zero it first); Reduce calls it with the
	// micro-shards this replica is to compute (none, some or all; and
	// again, with others, if the plan changes while the step runs). With
	// fin, it reports the ranges of into it finishes as it goes, and
	// finishes fin's own range last.
	Compute func(shards []int, into []int64, fresh bool, fin *Finishing) error
	// Update, on a replica that owns the chunk [lo, hi) of the reduced
	// vector, prepares the step's update of the parameters in it and
	// returns part, which takes the reduced values grad — the chunk's
	// elements [at, at+len(grad)) — and puts in into (of grad's length;
	// grad itself may be given) the parameters after the update, and the
	// other values (the losses and observer ranges) as they are. Parts that cover the
	// chunk once may be given in any order, each as soon as it is reduced;
	// with WholeUpdate, one part: the whole chunk. Update leaves the
	// trainer's parameters and optimizer state as they are until the step
	// completes (a membership change may make the chunk another
	// replica's), and may be called again for another chunk.
	Update func(ctx context.Context, lo, hi int) (part func(at int, grad, into []float32) error, err error)
	// WholeUpdate says Update's part takes the whole chunk at once (a
	// policy's extra loss term adds to the whole gradient).
	WholeUpdate bool
	// Single, where set, computes the micro-shard k alone, for a replica
	// that computes one micro-shard of the step, and returns its vector
	// as float32 segments that cover it in order, every value one ToFixed
	// accepts (checked: it fails as Compute does). The replica sends the
	// other owners their ranges as they are — four bytes a value — and
	// every owner converts its chunk's values to the integers Compute
	// would have summed, as it sums them. It returns no segments where it
	// cannot (a device computes the gradients): the replica calls Compute
	// then. The segments are the trainer's until it computes again.
	Single func(k int) ([][]float32, error)
	// Moments returns the optimizer state of elements [lo, hi) of the
	// vector as it stands before the step's update: the coordinator's
	// replica serves it to a replica that takes over a chunk whose state
	// it does not hold.
	Moments func(lo, hi int) []float32
}

// Finishing lets Step.Compute hand over the ranges of a step's partial
// sums it has finished while it computes the rest: a replica sends the
// other owners their ranges as they are finished and sums its own chunk
// last, so that the others' travel (and are reduced there) while it
// computes — the overlap of the exchange with the computation that DDP
// gets from its gradient buckets.
type Finishing struct {
	// Lo and Hi are the range Compute finishes last: the replica's own
	// chunk. A range Compute finishes before it may hold a few of its
	// elements (a gradient is cut in whole rows).
	Lo, Hi int
	// Done is called with each range [lo, hi) of into whose values are
	// final: ranges that do not overlap, in the order Compute finishes
	// them. Compute need not report every range (a device's gradients
	// come whole): the replica sends what remains when it returns.
	Done func(lo, hi int)
}

// MomentSource is a Parallel through which a replica fetches the
// optimizer state of a chunk it takes over (a membership change moved the
// chunks) from a replica that holds the whole state: the Moments of that
// replica's step.
type MomentSource interface {
	FetchMoments(ctx context.Context, step int64, lo, hi int) ([]float32, error)
}

// Joinable is a Parallel that replicas may join during training: before
// each step it names, the trainer hands its complete state to
// Config.ShareState, and the joining replicas start from that state at
// that step.
type Joinable interface {
	JoinAt(step int64) bool
}

// FixedShift is the fixed-point scale of reduced values: v is carried as
// round(v·2^FixedShift) in an int64, so a sum of up to 2^(63-FixedShift-
// log2(FixedLimit)) values cannot overflow, and values down to 2^-40 ≈ 1e-12
// are kept.
const FixedShift = 40

// FixedLimit bounds the magnitude of a value carried in fixed point; a
// gradient beyond it is treated like a non-finite one (the run diverged).
const FixedLimit = 1 << 20

// ToFixed converts v to fixed point; ok is false for NaN, ±Inf and values
// of magnitude FixedLimit or more.
func ToFixed(v float32) (q int64, ok bool) {
	f := float64(v)
	if !(f > -FixedLimit && f < FixedLimit) {
		return 0, false
	}
	return int64(math.RoundToEven(f * (1 << FixedShift))), true
}

// FromFixed converts a fixed-point sum back to float32 (one rounding, the
// same everywhere).
func FromFixed(q int64) float32 { return float32(float64(q) / (1 << FixedShift)) }

// FromFixedAdd sets dst[i] = FromFixed(q[i] + add[i]) over q's length:
// the last of a reduction's sums and its conversion in one pass, eight at
// a time with AVX-512; with AVX2 alone, four at a time where the sums are
// below 2^51 in magnitude (every gradient of a healthy run).
func FromFixedAdd(dst []float32, q, add []int64) {
	dst, add = dst[:len(q)], add[:len(q)]
	i := 0
	if hasAVX512DQ && len(q) >= 8 {
		fromFixed8(&dst[0], &q[0], &add[0], len(q))
		i = len(q) / 8 * 8
	}
	for i < len(q) {
		if !hasAVX512DQ && hasAVX2 && len(q)-i >= 4 {
			i += fromFixed4(&dst[i], &q[i], &add[i], len(q)-i)
		}
		// The block the vector pass stopped at, or the tail.
		for end := min(i+4, len(q)); i < end; i++ {
			dst[i] = FromFixed(q[i] + add[i])
		}
	}
}

// AddFixed adds vs, in fixed point, to into; it fails on the first value
// ToFixed refuses. With AVX-512 every value ToFixed takes is converted
// sixteen at a time; with AVX2 alone, those of magnitude below 2^11 (every
// gradient of a healthy run) four at a time; the same integers either way,
// the rest through ToFixed.
func AddFixed(into []int64, vs []float32) error { return putFixed(into, vs, true) }

// SetFixed is AddFixed into a vector of zeros: into holds vs in fixed
// point afterwards, whatever it held before.
func SetFixed(into []int64, vs []float32) error { return putFixed(into, vs, false) }

func putFixed(into []int64, vs []float32, add bool) error {
	if len(vs) == 0 {
		return nil
	}
	into = into[:len(vs)]
	ptr := &vs[0]
	for i := 0; i < len(vs); {
		block := 4
		if hasAVX512DQ && len(vs)-i >= 16 {
			i = fixedSum16(&into[0], &ptr, 1, i, len(vs), add)
			block = 16
		} else if hasAVX2 && len(vs)-i >= 4 {
			i += fixed4(&into[i], &vs[i], len(vs)-i, add)
		}
		// The block the vector pass stopped at, or the tail.
		for end := min(i+block, len(vs)); i < end; i++ {
			q, ok := ToFixed(vs[i])
			if !ok {
				return fmt.Errorf("%w: value %v at %d cannot be reduced exactly", ErrNonFinite, vs[i], i)
			}
			if add {
				q += into[i]
			}
			into[i] = q
		}
	}
	return nil
}

// AddFixedSum adds the sum over vss of each vector in fixed point to
// into — the integers AddFixed of each in turn would leave — reading into
// and writing it once (with AVX-512, sixteen values of every vector at a
// time; with AVX2 alone, eight, where they are below 2^11 in magnitude);
// it fails on the first value ToFixed refuses, the vectors' values
// at one index checked in order before the next index's. Every vector has
// into's length.
func AddFixedSum(into []int64, vss [][]float32) error { return putFixedSum(into, vss, true) }

// SetFixedSum is AddFixedSum into a vector of zeros.
func SetFixedSum(into []int64, vss [][]float32) error { return putFixedSum(into, vss, false) }

func putFixedSum(into []int64, vss [][]float32, add bool) error {
	n := len(into)
	for _, vs := range vss {
		if len(vs) != n {
			return fmt.Errorf("trainer: fixed-point sum of %d values and %d", n, len(vs))
		}
	}
	switch len(vss) {
	case 0:
		if !add {
			clear(into)
		}
		return nil
	case 1:
		return putFixed(into, vss[0], add)
	}
	ptrs := make([]*float32, len(vss))
	for j, vs := range vss {
		if n > 0 {
			ptrs[j] = &vs[0]
		}
	}
	for i := 0; i < n; {
		block := 1
		if hasAVX512DQ && n-i >= 16 {
			i = fixedSum16(&into[0], &ptrs[0], len(ptrs), i, n, add)
			block = 16
		} else if hasAVX2 && n-i >= 8 {
			i = fixedSum8(&into[0], &ptrs[0], len(ptrs), i, n, add)
			block = 8
		}
		// The block the vector pass stopped at, or the tail.
		for end := min(i+block, n); i < end; i++ {
			var q int64
			if add {
				q = into[i]
			}
			for _, vs := range vss {
				v, ok := ToFixed(vs[i])
				if !ok {
					return fmt.Errorf("%w: value %v at %d cannot be reduced exactly", ErrNonFinite, vs[i], i)
				}
				q += v
			}
			into[i] = q
		}
	}
	return nil
}

// CheckFixed fails as AddFixed does on the first value of vs that ToFixed
// refuses (eight values at a time compared with FixedLimit, with AVX2).
func CheckFixed(vs []float32) error {
	i := 0
	if hasAVX2 && len(vs) >= 8 {
		i = fixable8(&vs[0], len(vs))
	}
	for ; i < len(vs); i++ {
		if _, ok := ToFixed(vs[i]); !ok {
			return fmt.Errorf("%w: value %v at %d cannot be reduced exactly", ErrNonFinite, vs[i], i)
		}
	}
	return nil
}

// ShardGradients computes micro-shard gradients for a replica on another
// device: the replica's own graph is not run for its shards.
type ShardGradients interface {
	// Prepare is called before a step's first shard with the model as it
	// stands (parameters, quantization controls).
	Prepare(m *model.Model) error
	// Shard returns the gradient of the mean loss over the samples x
	// (pixels/255, row-major) with class labels y, per parameter in
	// Model.Params order, and the shard's mean loss, mean distillation
	// term and correct count; stream numbers the shard for dropout masks.
	Shard(x, y []float32, stream uint64) ([][]float32, ShardStats, error)
}

// ShardStats are one micro-shard's figures.
type ShardStats struct {
	Loss, Distill, Correct float32
}

// parallelLayout is where each part of a step lives in the reduced
// vector: the parameters' gradients in Model.Params order, the hint
// projection's gradient, each activation observer's per-micro-shard minimum
// and maximum (each micro-shard writes only its own slots, so the sum holds
// them all), then the loss, the distillation loss and the correct count.
type parallelLayout struct {
	params   []int // offset of each parameter's gradient
	proj     int   // offset of the projection's gradient (-1: none)
	obs      int   // offset of the observer slots
	obsNames []string
	loss     int
	n        int
}

// layout returns the vector's layout for the current model, computed once
// per graph build (build clears it).
func (t *Trainer) layout() *parallelLayout {
	if t.parLayout != nil {
		return t.parLayout
	}
	l := &parallelLayout{}
	for _, p := range t.cfg.Model.Params {
		l.params = append(l.params, l.n)
		l.n += p.Size()
	}
	l.proj = -1
	if t.proj != nil {
		l.proj = l.n
		l.n += t.proj.Size()
	}
	l.obs = l.n
	for name := range t.cfg.Model.ActQuant {
		l.obsNames = append(l.obsNames, name)
	}
	slices.Sort(l.obsNames)
	l.n += 2 * len(l.obsNames) * t.cfg.Parallel.MicroShards()
	l.loss = l.n
	l.n += 3
	t.parLayout = l
	return l
}

// parallelStep computes the step's gradient as a replica: its share of
// the batch idx in micro-shards, reduced with the others'.
func (t *Trainer) parallelStep(ctx context.Context, idx []int, epoch int) error {
	s := &t.state
	par := t.cfg.Parallel
	shards := par.MicroShards()
	micro := len(idx) / shards
	l := t.layout()
	x, y := t.net.XValue.Float32s(), t.net.YValue.Float32s()
	for _, name := range l.obsNames {
		t.cfg.Model.ActQuant[name].Hold = true
	}
	defer func() {
		for _, name := range l.obsNames {
			o := t.cfg.Model.ActQuant[name]
			o.Hold, o.Seen = false, false
		}
	}()
	load := func(k int) { // the micro-shard k's samples into the batch
		t.curIdx = idx[k*micro : (k+1)*micro]
		t.batch.Fill(x, y, t.curIdx, epoch)
	}
	prepared := false
	compute := func(ks []int, into []int64, fresh bool, fin *Finishing) error {
		if fresh {
			// The micro-shards' gradients are put in place of what into
			// holds (they are its whole [0, l.obs) when the graph runs);
			// the rest starts from zero.
			clear(into[l.obs:])
			if len(ks) == 0 || t.cfg.Gradients != nil || len(t.grads) != len(l.params) || (l.proj >= 0) != (t.projGrad != nil) {
				clear(into[:l.obs])
				fresh = false
			}
		}
		for _, k := range ks {
			if k < 0 || k >= shards {
				return fmt.Errorf("trainer: step %d: micro-shard %d outside [0, %d)", s.Step+1, k, shards)
			}
		}
		if g := t.cfg.Gradients; g != nil {
			for _, k := range ks {
				load(k)
				if !prepared {
					if err := g.Prepare(t.cfg.Model); err != nil {
						return fmt.Errorf("trainer: step %d: %w", s.Step+1, err)
					}
					prepared = true
				}
				if err := t.addDeviceShard(g, k, micro, into); err != nil {
					return err
				}
			}
			return nil
		}
		return t.computeShards(ks, into, fresh, load, fin)
	}
	single := func(k int) ([][]float32, error) {
		if t.cfg.Gradients != nil || len(t.grads) != len(l.params) || (l.proj >= 0) != (t.projGrad != nil) || k < 0 || k >= shards {
			return nil, nil
		}
		load(k)
		if err := t.runShard(k, shards); err != nil {
			return nil, err
		}
		return t.singleSegments(k)
	}
	t.pending = nil
	v, updated, err := par.Reduce(ctx, s.Step, l.n, Step{Compute: compute, Single: single, Update: t.updateChunk, WholeUpdate: t.wholeUpdate(), Moments: t.moments})
	if err != nil {
		return err
	}
	if len(v) != l.n {
		return fmt.Errorf("trainer: step %d: reduced %d values, want %d", s.Step+1, len(v), l.n)
	}
	inv := float32(shards)
	t.updated = updated
	if updated {
		t.takeUpdated(v)
	} else {
		t.gradBuffers()
		for i, p := range t.cfg.Model.Params {
			divide(t.pgrads[i], v[l.params[i]:l.params[i]+p.Size()], inv)
			s.Grads[i] = t.pgrads[i]
		}
		if l.proj >= 0 {
			divide(t.projGradPar, v[l.proj:l.proj+t.proj.Size()], inv)
		}
	}
	for j, name := range l.obsNames {
		o := t.cfg.Model.ActQuant[name]
		if !o.Enabled || o.Frozen {
			continue
		}
		slots := v[l.obs+2*j*shards : l.obs+2*(j+1)*shards]
		lo, hi := slots[0], slots[1]
		for k := 1; k < shards; k++ {
			lo, hi = min(lo, slots[2*k]), max(hi, slots[2*k+1])
		}
		o.Fold(lo, hi)
	}
	s.Loss = float64(v[l.loss] / inv)
	t.lastKD = float64(v[l.loss+1] / inv)
	t.lastCorrect = int(math.Round(float64(v[l.loss+2])))
	return nil
}

// addDeviceShard adds the micro-shard k's gradients, computed by g, and
// its figures to into.
func (t *Trainer) addDeviceShard(g ShardGradients, k, micro int, into []int64) error {
	s, l := &t.state, t.layout()
	x, y := t.net.XValue.Float32s(), t.net.YValue.Float32s()
	shards := t.cfg.Parallel.MicroShards()
	grads, st, err := g.Shard(x[:micro*t.cfg.Train.Features()], y[:micro], uint64(s.Step)*uint64(shards)+uint64(k))
	if err != nil {
		return fmt.Errorf("trainer: step %d: %w", s.Step+1, err)
	}
	for i, gr := range grads {
		if err := AddFixed(into[l.params[i]:], gr); err != nil {
			return fmt.Errorf("trainer: step %d: %s: %w", s.Step+1, t.cfg.Model.Params[i].Name, err)
		}
	}
	if err := AddFixed(into[l.loss:], []float32{st.Loss, st.Distill, st.Correct}); err != nil {
		return fmt.Errorf("trainer: step %d: loss: %w", s.Step+1, err)
	}
	return nil
}

// computeShards runs the graph on the micro-shards ks one after the other
// and sums their gradients into into (in place of what it holds, when
// fresh) in one pass at the end (sumShards): a gradient whose op keeps
// each run's output in a slot of its own (graphop.Slotted: the weights'
// gradients) is read where it lies, the others are copied aside until
// then. Each micro-shard's observer ranges and figures are added as it
// runs.
func (t *Trainer) computeShards(ks []int, into []int64, fresh bool, load func(k int), fin *Finishing) error {
	if len(ks) == 0 {
		return nil
	}
	s, l := &t.state, t.layout()
	shards := t.cfg.Parallel.MicroShards()
	nodes := t.grads
	if l.proj >= 0 {
		nodes = append(slices.Clip(nodes), t.projGrad)
	}
	slotted := make([]graphop.Slotted, len(nodes))
	for i, g := range nodes {
		slotted[i], _ = g.Op().(graphop.Slotted)
	}
	deferred := t.deferProducts(nodes, len(ks))
	defer func() {
		for _, o := range deferred {
			if o != nil {
				o.Defer(false)
			}
		}
	}()
	held := t.heldGrads(len(nodes), len(ks))
	for j, k := range ks {
		load(k)
		for _, o := range slotted {
			if o != nil {
				o.UseSlot(j)
			}
		}
		if err := t.runShard(k, shards); err != nil {
			return err
		}
		for i, g := range nodes {
			v := f32s(g.Value())
			if slotted[i] == nil && j < len(ks)-1 { // the next run overwrites it
				held[j][i] = append(held[j][i][:0], v...)
				v = held[j][i]
			}
			t.gradViews[i][j] = v
		}
		for q, name := range l.obsNames {
			o := t.cfg.Model.ActQuant[name]
			if o.Seen {
				slot := l.obs + 2*(q*shards+k)
				if err := AddFixed(into[slot:slot+2], []float32{o.SeenMin, o.SeenMax}); err != nil {
					return fmt.Errorf("trainer: step %d: observer %s: %w", s.Step+1, name, err)
				}
			}
		}
		if err := AddFixed(into[l.loss:], t.shardFigures()); err != nil {
			return fmt.Errorf("trainer: step %d: loss: %w", s.Step+1, err)
		}
	}
	return t.sumShards(nodes, deferred, len(ks), into, fresh, fin)
}

// sumRange is a range [a, b) of a gradient's elements that sumShards
// sums (node -1: the figures after the gradients, summed as they ran).
type sumRange struct{ node, off, a, b int }

// sumShards sums the runs' gradients of nodes into into, range by range:
// with fin, the ranges outside its own range first, each reported
// as it is finished — a deferred product cut in whole blocks of four rows,
// the others where the own range starts and ends.
func (t *Trainer) sumShards(nodes []*G.Node, deferred []graphop.Deferrable, runs int, into []int64, fresh bool, fin *Finishing) error {
	l := t.layout()
	var first, last []sumRange
	cut := func(node, off, size, step int) {
		a, b := size, size // the own range within [off, off+size), cut in steps
		if fin != nil {
			a = min(max(fin.Lo-off, 0), size)
			b = min(max(fin.Hi-off, 0), size)
			a, b = (a+step-1)/step*step, b/step*step // size is whole steps
		}
		if a >= b {
			first = append(first, sumRange{node, off, 0, size})
			return
		}
		if a > 0 {
			first = append(first, sumRange{node, off, 0, a})
		}
		last = append(last, sumRange{node, off, a, b})
		if b < size {
			first = append(first, sumRange{node, off, b, size})
		}
	}
	for i, g := range nodes {
		off, size := l.proj, len(t.gradViews[i][0])
		if i < len(l.params) {
			off = l.params[i]
		}
		step := 1
		if deferred[i] != nil {
			step = 4 * g.Shape()[1]
		}
		cut(i, off, size, step)
	}
	cut(-1, l.obs, l.n-l.obs, 1)
	byOffset := func(x, y sumRange) int { return (x.off + x.a) - (y.off + y.a) }
	slices.SortStableFunc(first, byOffset)
	slices.SortStableFunc(last, byOffset)
	for _, r := range append(first, last...) {
		if err := t.sumRange(nodes, deferred, runs, into, fresh, r); err != nil {
			return err
		}
		if fin != nil && fin.Done != nil {
			fin.Done(r.off+r.a, r.off+r.b)
		}
	}
	return nil
}

// sumRange sums the runs' values of one range of a gradient into into.
func (t *Trainer) sumRange(nodes []*G.Node, deferred []graphop.Deferrable, runs int, into []int64, fresh bool, r sumRange) error {
	if r.node < 0 {
		return nil
	}
	l := t.layout()
	name := "hint projection"
	if r.node < len(l.params) {
		name = t.cfg.Model.Params[r.node].Name
	}
	var err error
	if o := deferred[r.node]; o != nil {
		in := nodes[r.node].Shape()[1]
		err = t.sumProducts(into[r.off:], nodes[r.node], o, runs, r.a/in, r.b/in, !fresh)
	} else {
		vs := make([][]float32, runs)
		for j, v := range t.gradViews[r.node][:runs] {
			vs[j] = v[r.a:r.b]
		}
		put := AddFixedSum
		if fresh {
			put = SetFixedSum
		}
		err = put(into[r.off+r.a:r.off+r.b], vs)
	}
	if err != nil {
		return fmt.Errorf("trainer: step %d: %s: %w", t.state.Step+1, name, err)
	}
	return nil
}

// deferProducts makes the gradients whose runs fixedProducts can sum keep
// their operands instead of their products (graphop.Deferrable), and
// returns them by node (nil: the others): with runs > 1 and the exact
// GEMM, whose chains fixedProducts computes.
func (t *Trainer) deferProducts(nodes []*G.Node, runs int) []graphop.Deferrable {
	out := make([]graphop.Deferrable, len(nodes))
	if e, ok := t.cfg.Engine.(interface{ Exact() bool }); runs < 2 || !ok || !e.Exact() {
		return out
	}
	for i, g := range nodes {
		o, ok := g.Op().(graphop.Deferrable)
		if sh := g.Shape(); ok && len(sh) == 2 && canFixProducts(sh[0], sh[1]) {
			o.Defer(true)
			out[i] = o
		}
	}
	return out
}

// sumProducts puts rows [r0, r1) of the deferred gradient of node g,
// over its runs, into into in fixed point (added to what it holds with
// add); where a value is refused it computes the runs' products to name
// it.
func (t *Trainer) sumProducts(into []int64, g *G.Node, o graphop.Deferrable, runs, r0, r1 int, add bool) error {
	out, in := g.Shape()[0], g.Shape()[1]
	dzs, xs, ns := make([][]float32, runs), make([][]float32, runs), make([]int, runs)
	for j := range runs {
		dzs[j], xs[j], ns[j] = o.Operands(j)
	}
	if fixedProducts(into, dzs, xs, ns, out, in, r0, r1, add) {
		return nil
	}
	vs := make([][]float32, runs)
	for j := range vs {
		vs[j] = make([]float32, out*in)
		t.cfg.Engine.Sgemm(true, false, out, in, ns[j], 1, dzs[j], out, xs[j], in, 0, vs[j], in)
	}
	if err := SetFixedSum(make([]int64, out*in), vs); err != nil {
		return err
	}
	return fmt.Errorf("trainer: the fixed-point products refused a value the exact GEMM's do not")
}

// heldGrads returns the buffers that keep grads gradients of up to ks-1
// runs aside ([run][gradient]), and sizes gradViews for them.
func (t *Trainer) heldGrads(grads, ks int) [][][]float32 {
	for len(t.held) < ks {
		t.held = append(t.held, nil)
	}
	for j := range t.held[:ks] {
		for len(t.held[j]) < grads {
			t.held[j] = append(t.held[j], nil)
		}
	}
	for len(t.gradViews) < grads {
		t.gradViews = append(t.gradViews, nil)
	}
	for i := range t.gradViews[:grads] {
		for len(t.gradViews[i]) < ks {
			t.gradViews[i] = append(t.gradViews[i], nil)
		}
	}
	return t.held
}

// runShard runs the graph on the micro-shard k of shards whose samples
// the batch holds: its dropout stream and its own observer ranges.
func (t *Trainer) runShard(k, shards int) error {
	for _, d := range t.net.Dropouts {
		d.Calls = uint64(t.state.Step)*uint64(shards) + uint64(k)
	}
	for _, name := range t.layout().obsNames {
		t.cfg.Model.ActQuant[name].Seen = false
	}
	return t.forwardBackward()
}

// shardFigures are a micro-shard's loss, distillation term and correct
// count, as the graph last ran.
func (t *Trainer) shardFigures() []float32 {
	return []float32{f32s(t.net.Loss.Value())[0], float32(t.distillTerm()), float32(t.net.Correct())}
}

// singleSegments is Step.Single's result for the micro-shard k the graph
// last ran: its vector as segments — each parameter's gradient, the
// projection's, then the observer slots and figures — every value checked.
func (t *Trainer) singleSegments(k int) ([][]float32, error) {
	l := t.layout()
	shards := t.cfg.Parallel.MicroShards()
	segs := make([][]float32, 0, len(t.grads)+2)
	names := make([]string, 0, cap(segs))
	sizes := make([]int, 0, cap(segs))
	for i, g := range t.grads {
		p := t.cfg.Model.Params[i]
		segs, names, sizes = append(segs, f32s(g.Value())), append(names, p.Name), append(sizes, p.Size())
	}
	if l.proj >= 0 {
		segs, names, sizes = append(segs, f32s(t.projGrad.Value())), append(names, "hint projection"), append(sizes, t.proj.Size())
	}
	if len(t.singleTail) != l.n-l.obs {
		t.singleTail = make([]float32, l.n-l.obs)
	}
	tail := t.singleTail
	clear(tail)
	for j, name := range l.obsNames {
		if o := t.cfg.Model.ActQuant[name]; o.Seen {
			slot := 2 * (j*shards + k)
			tail[slot], tail[slot+1] = o.SeenMin, o.SeenMax
		}
	}
	copy(tail[l.loss-l.obs:], t.shardFigures())
	segs, names, sizes = append(segs, tail), append(names, "observer ranges and loss"), append(sizes, len(tail))
	for i, seg := range segs {
		if len(seg) != sizes[i] {
			return nil, fmt.Errorf("trainer: step %d: %s: %d values, want %d", t.state.Step+1, names[i], len(seg), sizes[i])
		}
		if err := CheckFixed(seg); err != nil {
			return nil, fmt.Errorf("trainer: step %d: %s: %w", t.state.Step+1, names[i], err)
		}
	}
	return segs, nil
}

// divide sets dst[i] = src[i] / d. A power of two divides as a product
// with its reciprocal, which is exact: the same bits, without a division
// per element (the usual micro-shard counts are powers of two).
func divide(dst, src []float32, d float32) {
	dst = dst[:len(src)]
	m, div := d, true
	if f, _ := math.Frexp(float64(d)); f == 0.5 && d >= 1 {
		m, div = 1/d, false
	}
	i := 0
	if n := len(src) &^ 7; hasAVX2 && n > 0 {
		scale8(&dst[0], &src[0], n, m, div) // eight at a time, the same operations
		i = n
	}
	for ; i < len(src); i++ {
		if div {
			dst[i] = src[i] / m
		} else {
			dst[i] = src[i] * m
		}
	}
}
