package trainer

import (
	"fmt"

	"github.com/lathe-ml/lathe/compute"
	"math"
	"slices"
)

// Optimizer kinds a recipe can name.
var OptimizerKinds = []string{"sgd", "adam", "adamw"}

// OptimConfig holds an optimizer's hyper-parameters.
type OptimConfig struct {
	Kind        string  // "sgd", "adam", "adamw"
	Momentum    float64 // sgd
	Nesterov    bool    // sgd
	WeightDecay float64 // L2 added to the gradient (sgd, adam) or decoupled (adamw)
	Beta1       float64 // adam, adamw
	Beta2       float64
	Eps         float64
	// NoDecay, when set, holds a flag per parameter (in Model.Params
	// order): weight decay leaves the flagged ones alone (biases, batch
	// norms' scales and shifts, as recipes choose).
	NoDecay []bool
	// Engine, if set, runs the update loops in parallel (they are
	// elementwise, so any split gives the same bits); nil runs them serially.
	Engine compute.Engine
}

// Optimizer updates parameters in place from their gradients.
//
// masks[i], when not nil, holds one byte per element of params[i]; where it
// is 0 the parameter, its gradient's effect and the optimizer's state for
// that element are all held at exactly zero — so a pruned weight stays
// pruned through momentum and Adam's moments.
type Optimizer interface {
	Step(params, grads [][]float32, masks [][]byte, lr float32)
	// State returns the optimizer's per-parameter buffers (for checkpoints
	// and tests), in a fixed order.
	State() [][]float32
	// Remap follows a model rebuild: new parameter i (of sizes[i] elements)
	// keeps the state of old parameter from[i], or starts from zero when
	// from[i] < 0.
	Remap(from, sizes []int)
	// Steps is the number of updates so far (Adam's bias correction), and
	// Load restores State's buffers and that count from a checkpoint.
	Steps() int
	Load(state [][]float32, steps int) error
	// Like returns an optimizer of the same kind and settings for
	// parameters of the given sizes, with zero state and no steps (a
	// replica updates the range of the parameters it owns with one), and
	// SetSteps sets the count of updates.
	Like(sizes []int) Optimizer
	SetSteps(n int)
}

// decay is parameter i's weight decay.
func (c OptimConfig) decay(i int) float32 {
	if i < len(c.NoDecay) && c.NoDecay[i] {
		return 0
	}
	return float32(c.WeightDecay)
}

// remapFlags follows a model rebuild for per-parameter flags.
func remapFlags(old []bool, from []int) []bool {
	if old == nil {
		return nil
	}
	out := make([]bool, len(from))
	for i, f := range from {
		out[i] = f >= 0 && f < len(old) && old[f]
	}
	return out
}

// load copies saved buffers into an optimizer's own.
func load(dst, src [][]float32) error {
	if len(dst) != len(src) {
		return fmt.Errorf("trainer: optimizer state has %d buffers, the optimizer %d", len(src), len(dst))
	}
	for i := range dst {
		if len(dst[i]) != len(src[i]) {
			return fmt.Errorf("trainer: optimizer buffer %d has %d elements, want %d", i, len(src[i]), len(dst[i]))
		}
		copy(dst[i], src[i])
	}
	return nil
}

func remap(old [][]float32, from, sizes []int) [][]float32 {
	if old == nil {
		return nil
	}
	out := alloc(sizes)
	for i, f := range from {
		if f >= 0 && len(old[f]) == sizes[i] {
			copy(out[i], old[f])
		}
	}
	return out
}

// NewOptimizer builds an optimizer for parameters of the given sizes.
func NewOptimizer(c OptimConfig, sizes []int) (Optimizer, error) {
	switch c.Kind {
	case "sgd":
		o := &sgd{c: c}
		if c.Momentum != 0 {
			o.v = alloc(sizes)
		}
		return o, nil
	case "adam", "adamw":
		if c.Beta1 == 0 && c.Beta2 == 0 {
			c.Beta1, c.Beta2 = 0.9, 0.999
		}
		if c.Eps == 0 {
			c.Eps = 1e-8
		}
		return &adam{c: c, m: alloc(sizes), v: alloc(sizes)}, nil
	}
	return nil, fmt.Errorf("trainer: unknown optimizer %q (sgd, adam, adamw)", c.Kind)
}

func alloc(sizes []int) [][]float32 {
	out := make([][]float32, len(sizes))
	for i, n := range sizes {
		out[i] = make([]float32, n)
	}
	return out
}

// sgd is SGD with optional momentum (PyTorch's form: v = μv + g; w -= lr·v),
// Nesterov momentum (w -= lr·(g + μv)) and L2 weight decay.
type sgd struct {
	c OptimConfig
	v [][]float32
	t int
}

func (o *sgd) State() [][]float32 { return o.v }

func (o *sgd) Remap(from, sizes []int) {
	o.v, o.c.NoDecay = remap(o.v, from, sizes), remapFlags(o.c.NoDecay, from)
}

func (o *sgd) Steps() int { return o.t }

func (o *sgd) SetSteps(n int) { o.t = n }

func (o *sgd) Like(sizes []int) Optimizer {
	l := &sgd{c: o.c}
	if o.v != nil {
		l.v = alloc(sizes)
	}
	return l
}

func (o *sgd) Load(state [][]float32, steps int) error {
	o.t = steps
	return load(o.v, state)
}

func (o *sgd) Step(params, grads [][]float32, masks [][]byte, lr float32) {
	o.t++
	spans(o.c.Engine, params, func(i, lo, hi int) { o.update(i, lo, hi, params, grads, masks, lr) })
}

// minChunk keeps small updates on one goroutine.
const minChunk = 1 << 15

// spans runs fn over every element of every tensor in one parallel region:
// the concatenation of the tensors is split into contiguous ranges, and fn
// receives each range's piece of tensor i as [lo, hi).
func spans(eng compute.Engine, tensors [][]float32, fn func(i, lo, hi int)) {
	total := 0
	for _, t := range tensors {
		total += len(t)
	}
	each := func(glo, ghi int) {
		base := 0
		for i, t := range tensors {
			lo, hi := max(glo-base, 0), min(ghi-base, len(t))
			if lo < hi {
				fn(i, lo, hi)
			}
			base += len(t)
			if base >= ghi {
				return
			}
		}
	}
	if eng == nil {
		each(0, total)
		return
	}
	eng.Parallel(total, minChunk, each)
}

// partStepper is an Optimizer whose update of an element reads that
// element's values alone (and the count of updates): a chunk's owner
// updates the chunk in parts, each as soon as it is reduced (Step.Update).
type partStepper interface {
	// stepPart applies the update numbered Steps() — the caller advanced
	// the count — to elements [off, off+len(w)) of tensor i, with their
	// gradients g and mask (nil: unmasked): the parameters read from w0
	// (w itself, or the values before the update w is to hold) and
	// written to w, the state read from from's (an optimizer of the same
	// kind and sizes; nil: its own) and written to its own.
	stepPart(i, off int, w, w0, g []float32, mask []byte, lr float32, from Optimizer)
}

var (
	_ partStepper = (*sgd)(nil)
	_ partStepper = (*adam)(nil)
)

func (o *sgd) update(i, lo, hi int, params, grads [][]float32, masks [][]byte, lr float32) {
	var mask []byte
	if masks != nil && masks[i] != nil {
		mask = masks[i][lo:hi]
	}
	w := params[i][lo:hi]
	o.stepPart(i, lo, w, w, grads[i][lo:hi], mask, lr, nil)
}

func (o *sgd) stepPart(i, lo int, w, w0, g []float32, mask []byte, lr float32, from Optimizer) {
	mu, wd := float32(o.c.Momentum), o.c.decay(i)
	hi := lo + len(w)
	w0, g = w0[:len(w)], g[:len(w)]
	if o.v == nil {
		for j := range w {
			w[j] = w0[j] - lr*(g[j]+wd*w0[j])
		}
		if mask != nil {
			applyMask(mask, w)
		}
		return
	}
	v, v0 := o.v[i][lo:hi], o.v[i][lo:hi]
	if from != nil {
		v0 = from.(*sgd).v[i][lo:hi]
	}
	v, v0 = v[:len(w)], v0[:len(w)]
	n, j0 := len(w)&^7, 0
	avx := hasAVX2 && n > 0
	switch {
	case mask != nil:
		// One pass: update, then zero w and v where the mask is 0.
		mask = mask[:len(w)]
		// The arithmetic is the unmasked paths', term for term, so an
		// all-ones mask gives the same bits as no mask.
		if o.c.Nesterov {
			for j := range w {
				keep := -uint32(mask[j]) // all ones or zero
				d := g[j] + wd*w0[j]
				vj := mu*v0[j] + d
				v[j] = math.Float32frombits(math.Float32bits(vj) & keep)
				w[j] = math.Float32frombits(math.Float32bits(w0[j]-lr*(d+mu*vj)) & keep)
			}
			return
		}
		if avx {
			sgdMomentumMasked8(&w[0], &w0[0], &v[0], &v0[0], &g[0], &mask[0], n, mu, wd, lr)
			j0 = n
		}
		for j := j0; j < len(w); j++ {
			keep := -uint32(mask[j])
			vj := mu*v0[j] + g[j] + wd*w0[j]
			v[j] = math.Float32frombits(math.Float32bits(vj) & keep)
			w[j] = math.Float32frombits(math.Float32bits(w0[j]-lr*vj) & keep)
		}
	case o.c.Nesterov:
		if avx {
			sgdNesterov8(&w[0], &w0[0], &v[0], &v0[0], &g[0], n, mu, wd, lr)
			j0 = n
		}
		for j := j0; j < len(w); j++ {
			d := g[j] + wd*w0[j]
			v[j] = mu*v0[j] + d
			w[j] = w0[j] - lr*(d+mu*v[j])
		}
	default:
		if avx {
			sgdMomentum8(&w[0], &w0[0], &v[0], &v0[0], &g[0], n, mu, wd, lr)
			j0 = n
		}
		for j := j0; j < len(w); j++ {
			v[j] = mu*v0[j] + g[j] + wd*w0[j]
			w[j] = w0[j] - lr*v[j]
		}
	}
}

// adam is Adam with bias correction; with Kind "adamw" the weight decay is
// decoupled (w -= lr·wd·w) instead of added to the gradient.
type adam struct {
	c    OptimConfig
	m, v [][]float32
	t    int
}

func (o *adam) State() [][]float32 { return slices.Concat(o.m, o.v) }

func (o *adam) Remap(from, sizes []int) {
	o.m, o.v, o.c.NoDecay = remap(o.m, from, sizes), remap(o.v, from, sizes), remapFlags(o.c.NoDecay, from)
}

func (o *adam) Steps() int { return o.t }

func (o *adam) SetSteps(n int) { o.t = n }

func (o *adam) Like(sizes []int) Optimizer { return &adam{c: o.c, m: alloc(sizes), v: alloc(sizes)} }

func (o *adam) Load(state [][]float32, steps int) error {
	o.t = steps
	return load(slices.Concat(o.m, o.v), state)
}

func (o *adam) Step(params, grads [][]float32, masks [][]byte, lr float32) {
	o.t++
	c1, sc2 := o.corrections()
	spans(o.c.Engine, params, func(i, lo, hi int) {
		var mask []byte
		if masks != nil && masks[i] != nil {
			mask = masks[i][lo:hi]
		}
		o.update(i, lo, params[i][lo:hi], grads[i][lo:hi], mask, lr, c1, sc2)
	})
}

// corrections are the bias corrections of the update numbered Steps():
// 1−β₁ᵗ, and 1/√(1−β₂ᵗ).
func (o *adam) corrections() (c1, sc2 float32) {
	c1 = float32(1 - math.Pow(o.c.Beta1, float64(o.t)))
	c2 := float32(1 - math.Pow(o.c.Beta2, float64(o.t)))
	return c1, float32(1 / math.Sqrt(float64(c2)))
}

func (o *adam) stepPart(i, lo int, w, w0, g []float32, mask []byte, lr float32, from Optimizer) {
	if len(w) > 0 && &w[0] != &w0[0] {
		copy(w, w0)
	}
	if from != nil {
		f, hi := from.(*adam), lo+len(w)
		copy(o.m[i][lo:hi], f.m[i][lo:hi])
		copy(o.v[i][lo:hi], f.v[i][lo:hi])
	}
	c1, sc2 := o.corrections()
	o.update(i, lo, w, g, mask, lr, c1, sc2)
}

func (o *adam) update(i, lo int, w, g []float32, mask []byte, lr, c1, sc2 float32) {
	fb1, fb2, eps, wd := float32(o.c.Beta1), float32(o.c.Beta2), float32(o.c.Eps), o.c.decay(i)
	decoupled := o.c.Kind == "adamw"
	{
		hi := lo + len(w)
		m, v := o.m[i][lo:hi], o.v[i][lo:hi]
		for j := range w {
			d := g[j]
			if decoupled {
				w[j] -= lr * wd * w[j]
			} else {
				d += wd * w[j]
			}
			m[j] = fb1*m[j] + (1-fb1)*d
			v[j] = fb2*v[j] + (1-fb2)*d*d
			denom := float32(math.Sqrt(float64(v[j])))*sc2 + eps
			w[j] -= lr * (m[j] / c1) / denom
		}
		if mask != nil {
			applyMask(mask, w)
			applyMask(mask, m)
			applyMask(mask, v)
		}
	}
}

// applyMask zeroes x where mask is 0, without branches.
func applyMask(mask []byte, x []float32) {
	x = x[:len(mask)]
	for j, keep := range mask {
		x[j] = math.Float32frombits(math.Float32bits(x[j]) & -uint32(keep))
	}
}
