package onnx

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// Sequences. A sequence is [batch, T, D] in ONNX and {1, T, D} in lathe —
// the same order in memory. A position-wise linear layer (MatMul by a
// constant, then its bias Add) stays pending (proj) until a reader shows
// what it is: the q, k or v of an attention pattern, or else a 1×1
// convolution. The attention pattern, GELU's Erf form and LayerNorm's
// decomposed form are followed node by node (their partial values are
// pending too) and become one lathe layer or activation when complete.

// proj is a pending position-wise linear layer x·Wᵀ + b.
type proj struct {
	x    *value
	w    []float32 // [out, in]
	b    []float32
	out  int
	base string // the layer's name-to-be (its weight's or bias's)
	node *onnxpb.NodeProto
	made *value // the 1×1 convolution, once made
	// whole is the packed projection this one was sliced from (mha.go).
	whole *proj
}

// heads is a projection viewed as [batch, T, H, dh], its axes permuted
// — or, folded, as [T, batch·H, dh] with perm over the axes (batch·H, T,
// dh) (mha.go) — and multiplied by scale.
type heads struct {
	p      *proj
	h, dh  int
	perm   []int
	folded bool
	scale  float64
}

// The heads' axes q, k and v take in q·kᵀ and its product with v, and the
// context's after that product.
func qPerm(folded bool) []int {
	if folded {
		return []int{0, 1, 2}
	}
	return []int{0, 2, 1, 3}
}

func kPerm(folded bool) []int {
	if folded {
		return []int{0, 2, 1}
	}
	return []int{0, 2, 3, 1}
}

// scores are q·kᵀ of two projections' heads [batch, H, T, T], scaled,
// masked and normalized so far; ctx their product with v's heads (perm:
// its axes relative to [batch, T, H, dh]); attnIn that back as [batch, T,
// E], waiting for the output projection.
type scores struct {
	q, k, v *proj
	h       int
	scale   float64
	causal  bool
	softmax bool
	perm    []int
	joined  bool // ctx reshaped to [batch, T, E] (folded: [T·batch, E])
	folded  bool // of folded heads
}

// erfGELU follows x·(1 + erf(x/√2))/2: stage 1 x/√2, 2 its erf, 3 plus
// one, 4 times x.
type erfGELU struct {
	x     *value
	name  string
	stage int
}

// decomposedLN follows (x − mean)/√(var + ε): stage 1 the mean, 2 x less
// it, 3 squared, 4 their mean, 5 plus ε, 6 its root.
type decomposedLN struct {
	x     *value
	name  string
	stage int
	eps   float64
}

// raw is input k as it is: a value (pending or not), or nil for a
// constant or a missing input.
func (im *importer) raw(n *onnxpb.NodeProto, k int) *value {
	if ins := n.GetInput(); k < len(ins) {
		return im.vals[ins[k]]
	}
	return nil
}

// ready makes a pending projection a 1×1 convolution (once) and refuses
// other pending values: they are parts of a pattern lathe takes whole.
func (im *importer) ready(v *value) (*value, error) {
	switch p := v.pend.(type) {
	case nil:
		if v.ids {
			return nil, errors.New("the byte ids feed only an embedding (a Gather from a constant table)")
		}
		return v, nil
	case *proj:
		if p.made == nil {
			l := graph.Layer{Name: im.name(p.node, p.base, "conv"), Kind: graph.Conv, Out: p.out, Kernel: 1}
			im.params[l.Name], im.params[l.Name+".bias"] = p.w, p.b
			p.made = im.addLayer(l, p.x)
		}
		return p.made, nil
	}
	if _, ok := v.pend.(*softmaxOut); ok {
		return nil, errors.New("it reads a softmax over the classes, which lathe has only as the model's output")
	}
	if _, ok := v.pend.(*sigmoidOf); ok {
		return nil, errors.New("it reads a sigmoid of a layer's output that something else reads too: lathe joins a sigmoid to the layer before it only where nothing else reads that output, or as SiLU (x·sigmoid(x))")
	}
	return nil, fmt.Errorf("it reads part of an attention, GELU or LayerNorm computation (%T) in a way lathe does not recognise", v.pend)
}

// seqMatMul is a MatMul of the sequence patterns: a position-wise linear
// layer, q·kᵀ, the scores times v, or the attention's output projection.
func (im *importer) seqMatMul(n *onnxpb.NodeProto, a, b *value) (*value, error) {
	if b == nil { // by a constant
		w, err := im.konst(n, 1)
		if err != nil || w == nil || len(w.dims) != 2 {
			return nil, errors.Join(errors.New("lathe multiplies a sequence by a 2-D constant only (a linear layer)"), err)
		}
		wt, err := w.transpose(nil)
		if err != nil {
			return nil, err
		}
		if s, ok := a.pend.(*scores); ok && s.joined {
			return im.attention(n, s, wt.floats(), w.dims[0], w.dims[1], nil)
		}
		x, err := im.ready(a)
		if err != nil {
			return nil, err
		}
		if x.shape.C != w.dims[0] {
			return nil, fmt.Errorf("a %v weight for %d values per position", w.dims, x.shape.C)
		}
		p := &proj{x: x, w: slices.Clone(wt.floats()), b: make([]float32, w.dims[1]), out: w.dims[1], base: n.GetInput()[1], node: n}
		return &value{layer: x.layer, shape: graph.Shape{H: 1, W: x.shape.W, C: p.out}, rank: 3, sole: true, tmajor: x.tmajor, pend: p}, nil
	}
	qh, qok := a.pend.(*heads)
	kh, kok := b.pend.(*heads)
	if qok && kok && qh.folded == kh.folded && slices.Equal(qh.perm, qPerm(qh.folded)) && slices.Equal(kh.perm, kPerm(kh.folded)) {
		if qh.h != kh.h || qh.dh != kh.dh || qh.p.x.layer != kh.p.x.layer {
			return nil, errors.New("q and k of different widths or inputs")
		}
		s := &scores{q: qh.p, k: kh.p, h: qh.h, scale: qh.scale * kh.scale, folded: qh.folded}
		return &value{layer: a.layer, rank: a.rank, pend: s}, nil
	}
	s, sok := a.pend.(*scores)
	vh, vok := b.pend.(*heads)
	if sok && vok && s.softmax && s.v == nil && vh.folded == s.folded && slices.Equal(vh.perm, qPerm(s.folded)) {
		if vh.h != s.h || vh.p.x.layer != s.q.x.layer || vh.scale != 1 {
			return nil, errors.New("v of another width or input than q and k, or scaled")
		}
		c := *s
		c.v, c.perm = vh.p, qPerm(s.folded)
		return &value{layer: a.layer, rank: a.rank, pend: &c}, nil
	}
	return nil, errors.New("a product of two computed values other than the attention pattern's q·kᵀ ([batch, H, T, dh] by [batch, H, dh, T], or nn.MultiheadAttention's [batch·H, T, dh] by [batch·H, dh, T]) and its scores times v")
}

// attention makes the attention layer once its output projection (W
// [E, D] as ONNX multiplies by it: wt is its transpose [D, E]) arrives.
// lathe scales the scores by 1/√dh; another scale goes into q.
func (im *importer) attention(n *onnxpb.NodeProto, s *scores, wt []float32, e, d int, bias []float32) (*value, error) {
	q, k, v := s.q, s.k, s.v
	if q.out != e || k.out != e || v.out != e || e%s.h != 0 || q.x.shape.C != d {
		return nil, fmt.Errorf("an attention of width %d over %d values per position with an output projection %d×%d", q.out, q.x.shape.C, e, d)
	}
	dh := e / s.h
	if f := float32(s.scale * math.Sqrt(float64(dh))); f != 1 {
		q.w, q.b = slices.Clone(q.w), slices.Clone(q.b)
		for i := range q.w {
			q.w[i] *= f
		}
		for i := range q.b {
			q.b[i] *= f
		}
	}
	base := ""
	if pre, ok := strings.CutSuffix(trimWeight(q.base), ".q"); ok && trimWeight(k.base) == pre+".k" && trimWeight(v.base) == pre+".v" {
		base = pre
	}
	if q.whole != nil && q.whole == k.whole && q.whole == v.whole {
		base = packedName(q.whole.base, n)
	}
	l := graph.Layer{Name: im.name(n, base, "attn"), Kind: graph.Attention, Heads: s.h, Causal: s.causal}
	if e != d {
		l.Out = e
	}
	for _, part := range []struct {
		suffix string
		w, b   []float32
	}{{".q", q.w, q.b}, {".k", k.w, k.b}, {".v", v.w, v.b}, {".o", wt, make([]float32, d)}} {
		im.params[l.Name+part.suffix], im.params[l.Name+part.suffix+".bias"] = part.w, part.b
	}
	if bias != nil {
		im.params[l.Name+".o.bias"] = bias
	}
	out := im.addLayer(l, q.x)
	if s.folded { // [T·batch, E] until reshaped back
		return &value{layer: out.layer, shape: out.shape, rank: 2, pend: &rows{x: out}}, nil
	}
	return out, nil
}

// trimWeight is an initializer's name less ".weight" or ".bias".
func trimWeight(s string) string {
	return strings.TrimSuffix(strings.TrimSuffix(s, ".weight"), ".bias")
}

// seqTranspose permutes a pending heads or context value's axes.
func (im *importer) seqTranspose(n *onnxpb.NodeProto) (*value, error) {
	x := im.raw(n, 0)
	p := attrInts(n, "perm")
	if x != nil && len(p) == 3 {
		return im.transpose3(n, x, p)
	}
	seen := map[int64]bool{}
	for _, a := range p {
		seen[a] = a >= 0 && a < 4
	}
	if x == nil || len(p) != 4 || len(seen) != 4 || seen[-1] || slices.Contains(p, -1) || !seen[0] || !seen[1] || !seen[2] || !seen[3] {
		return nil, errors.New("lathe transposes only the heads of an attention pattern ([batch, T, H, dh] and back)")
	}
	compose := func(perm []int) []int {
		out := make([]int, 4)
		for i, a := range p {
			out[i] = perm[a]
		}
		return out
	}
	switch h := x.pend.(type) {
	case *heads:
		c := *h
		c.perm = compose(h.perm)
		if !h.folded {
			return &value{layer: x.layer, rank: 4, pend: &c}, nil
		}
	case *scores:
		if h.v != nil && !h.joined && !h.folded {
			c := *h
			c.perm = compose(h.perm)
			return &value{layer: x.layer, rank: 4, pend: &c}, nil
		}
	}
	return nil, errors.New("lathe transposes only the heads of an attention pattern ([batch, T, H, dh] and back)")
}

// seqReshape splits a projection into heads, or joins the heads of the
// attention's result.
func (im *importer) seqReshape(n *onnxpb.NodeProto, x *value, target []int64) (*value, bool, error) {
	switch p := x.pend.(type) {
	case *proj:
		if x.tmajor {
			return im.foldHeads(x, p, target)
		}
		if len(target) == 4 && target[2] > 0 && (target[3] > 0 || target[3] == -1) {
			h := int(target[2])
			if p.out%h != 0 || (target[3] > 0 && int(target[3])*h != p.out) || (target[1] != int64(x.shape.W) && target[1] != 0) {
				return nil, true, fmt.Errorf("%d values per position viewed as %v", p.out, target)
			}
			return &value{layer: x.layer, rank: 4, pend: &heads{p: p, h: h, dh: p.out / h, perm: []int{0, 1, 2, 3}, scale: 1}}, true, nil
		}
	case *scores:
		if p.folded {
			return im.joinHeads(x, p, target)
		}
		if p.v != nil && !p.joined && slices.Equal(p.perm, []int{0, 1, 2, 3}) && len(target) == 3 {
			c := *p
			c.joined = true
			return &value{layer: x.layer, rank: 3, pend: &c}, true, nil
		}
		return nil, true, errors.New("reshapes the attention's heads other than back to [batch, T, E]")
	case *rows:
		return im.unfoldRows(x, p, target)
	}
	return nil, false, nil
}

// embedding is a Gather of the byte ids from a constant table.
func (im *importer) gather(n *onnxpb.NodeProto) (*value, error) {
	table, err := im.konst(n, 0)
	ids := im.raw(n, 1)
	if err != nil || table == nil || ids == nil || !ids.ids || len(table.dims) != 2 || attrInt(n, "axis", 0) != 0 {
		return nil, errors.New("lathe gathers only rows of a constant table by the network's byte ids (an embedding)")
	}
	v, d := table.dims[0], table.dims[1]
	if v > 256 {
		return nil, fmt.Errorf("a table of %d rows: lathe's ids are bytes (at most 256)", v)
	}
	l := graph.Layer{Name: im.name(n, n.GetInput()[0], "emb"), Kind: graph.Embedding, Out: d}
	if v != 256 {
		l.Vocab = v
	}
	im.params[l.Name], im.params[l.Name+".pos"] = slices.Clone(table.floats()), make([]float32, ids.shape.W*d)
	in := *ids
	in.ids = false
	return im.addLayer(l, &in), nil
}

// layerNorm is a LayerNormalization over each position's values.
func (im *importer) layerNorm(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if a := attrInt(n, "axis", -1); a != -1 && a != int64(x.rank-1) {
		return nil, fmt.Errorf("axis %d: lathe normalizes each position's values (the last axis)", a)
	}
	scale, err := im.konst(n, 1)
	if err != nil || scale == nil {
		return nil, errors.Join(errors.New("its scale must be a constant"), err)
	}
	bias, err := im.konst(n, 2)
	if err != nil {
		return nil, err
	}
	l, err := im.makeLN(n, x, float64(attrFloat(n, "epsilon", 1e-5)), n.GetInput()[1])
	if err != nil {
		return nil, err
	}
	c := x.shape.C
	if scale.size() != c || (bias != nil && bias.size() != c) {
		return nil, fmt.Errorf("a scale or bias of the wrong size for %d values", c)
	}
	im.params[l.layer] = slices.Clone(scale.floats())
	if bias != nil {
		im.params[l.layer+".bias"] = slices.Clone(bias.floats())
	}
	return l, nil
}

// makeLN adds a layer norm (scale 1, shift 0) over x.
func (im *importer) makeLN(n *onnxpb.NodeProto, x *value, eps float64, base string) (*value, error) {
	if float32(eps) != float32(graph.LNEpsilon) {
		return nil, fmt.Errorf("epsilon %g: lathe's layer norms use %g", eps, graph.LNEpsilon)
	}
	if x.rank == 4 {
		return nil, errors.New("a layer norm over an image: lathe normalizes the positions of a sequence")
	}
	l := graph.Layer{Name: im.name(n, trimWeight(base), "ln"), Kind: graph.LayerNorm}
	im.params[l.Name], im.params[l.Name+".bias"] = slices.Repeat([]float32{1}, x.shape.C), make([]float32, x.shape.C)
	return im.addLayer(l, x), nil
}

// scalar is a constant input's single value.
func (im *importer) scalarIn(n *onnxpb.NodeProto, k int) (float64, bool) {
	c, err := im.konst(n, k)
	if err != nil || c == nil {
		return 0, false
	}
	return c.scalar()
}

// arith is Sub, Mul, Div, Pow, Sqrt or Erf on computed values: steps of
// the patterns above, or a scale joined to a layer norm.
func (im *importer) arith(n *onnxpb.NodeProto) (*value, error) {
	op, a, b := n.GetOpType(), im.raw(n, 0), im.raw(n, 1)
	ck := 1                                  // the constant's input
	if a == nil && b != nil && op == "Mul" { // a constant first
		a, b, ck = b, nil, 0
	}
	c, _ := im.scalarIn(n, ck)
	if a == nil {
		return nil, errors.New("lathe computes this only on a constant's left")
	}
	if a.layer == graph.Input && a.pend == nil && !a.ids && b == nil && (op == "Sub" || op == "Div" || op == "Mul") {
		return im.normalize(n, a, ck)
	}
	switch p := a.pend.(type) {
	case *scores:
		if b == nil && !p.softmax && p.v == nil && (op == "Mul" || op == "Div") {
			v, ok := im.scalarIn(n, ck)
			if !ok {
				return nil, errors.New("scales the attention scores by a non-scalar")
			}
			s := *p
			if op == "Mul" {
				s.scale *= v
			} else {
				s.scale /= v
			}
			return &value{layer: a.layer, rank: a.rank, pend: &s}, nil
		}
	case *heads: // q scaled before q·kᵀ
		if v, ok := im.scalarIn(n, ck); ok && b == nil && (op == "Mul" || op == "Div") {
			h := *p
			if op == "Mul" {
				h.scale *= v
			} else {
				h.scale /= v
			}
			return &value{layer: a.layer, rank: a.rank, pend: &h}, nil
		}
	case *erfGELU:
		switch {
		case op == "Erf" && p.stage == 1:
			return im.stage(a, &erfGELU{x: p.x, name: p.name, stage: 2}), nil
		case op == "Mul" && p.stage == 4 && b == nil && c == 0.5:
			return im.gelu(n, p)
		}
	case *decomposedLN:
		return im.lnStep(n, a, b, p)
	case *sigmoidOf: // sigmoid(x)·x
		if op == "Mul" && b != nil && b.pend == nil && b.layer == p.x.layer && n.GetInput()[1] == p.name {
			return im.silu(p)
		}
	}
	if b != nil {
		if s, ok := b.pend.(*sigmoidOf); ok && op == "Mul" && a.pend == nil && a.layer == s.x.layer && n.GetInput()[0] == s.name {
			return im.silu(s) // x·sigmoid(x)
		}
		if g, ok := b.pend.(*erfGELU); ok && op == "Mul" && g.stage == 3 && g.x.layer == readyLayer(a) {
			return im.stage(a, &erfGELU{x: g.x, name: g.name, stage: 4}), nil
		}
		if l, ok := b.pend.(*decomposedLN); ok && op == "Sub" && l.stage == 1 && l.x.layer == readyLayer(a) {
			return im.stage(a, &decomposedLN{x: l.x, name: l.name, stage: 2}), nil
		}
		return nil, fmt.Errorf("%s of two computed values, outside the GELU and LayerNorm patterns lathe recognises", op)
	}
	x, err := im.ready(a)
	if err != nil {
		return nil, err
	}
	if op == "Div" && math.Abs(c-math.Sqrt2) < 1e-6 {
		return im.stage(x, &erfGELU{x: x, name: n.GetInput()[0], stage: 1}), nil
	}
	if op == "Mul" {
		if l := im.layer(x.layer); l != nil && l.Kind == graph.LayerNorm && x.sole && im.uses[n.GetInput()[0]] == 1 {
			return im.scaleLN(n, x, l, ck)
		}
	}
	if op == "Erf" || op == "Sqrt" {
		return nil, fmt.Errorf("%s of a computed value: lathe has no layer for it (outside the GELU and LayerNorm patterns)", op)
	}
	return nil, fmt.Errorf("%s of a computed value by a constant: lathe has no layer for it (outside the attention, GELU and LayerNorm patterns and a layer norm's scale)", op)
}

// readyLayer is the layer a value comes from once ready (a made
// projection's).
func readyLayer(v *value) string {
	if p, ok := v.pend.(*proj); ok && p.made != nil {
		return p.made.layer
	}
	return v.layer
}

func (im *importer) stage(x *value, pend any) *value {
	return &value{layer: x.layer, shape: x.shape, rank: x.rank, tmajor: x.tmajor, pend: pend}
}

// gelu joins GELU to the layer computing p.x, read only by the pattern
// (x/√2 and x·(1 + erf)).
func (im *importer) gelu(n *onnxpb.NodeProto, p *erfGELU) (*value, error) {
	l := im.layer(p.x.layer)
	if l == nil || !p.x.sole || im.uses[p.name] != 2 || (l.Act != "" && l.Act != graph.Identity) || (l.Kind != graph.Conv && l.Kind != graph.Linear) {
		return nil, fmt.Errorf("GELU of %s, which is not a linear layer's own output read by the GELU only", p.name)
	}
	l.Act = graph.GELU
	out := *p.x
	return &out, nil
}

// lnStep follows the decomposed layer norm.
func (im *importer) lnStep(n *onnxpb.NodeProto, a, b *value, p *decomposedLN) (*value, error) {
	op := n.GetOpType()
	next := func(stage int) *value {
		return im.stage(a, &decomposedLN{x: p.x, name: p.name, stage: stage, eps: p.eps})
	}
	c, isScalar := im.scalarIn(n, 1)
	switch {
	case op == "Pow" && p.stage == 2 && isScalar && c == 2:
		return next(3), nil
	case op == "Mul" && p.stage == 2 && b != nil && b.pend == a.pend:
		return next(3), nil
	case op == "Sqrt" && p.stage == 5:
		return next(6), nil
	case op == "Div" && p.stage == 2 && b != nil:
		if s, ok := b.pend.(*decomposedLN); ok && s.stage == 6 && s.x == p.x {
			return im.makeLN(n, p.x, s.eps, "")
		}
	}
	return nil, fmt.Errorf("%s in a layer norm's decomposed form at an unexpected step", op)
}

// scaleLN multiplies a layer norm's scale and shift by a constant.
func (im *importer) scaleLN(n *onnxpb.NodeProto, x *value, l *graph.Layer, ck int) (*value, error) {
	c, err := im.konst(n, ck)
	if err != nil || c == nil {
		return nil, errors.Join(errors.New("a layer norm scaled by a computed value"), err)
	}
	w, err := biasOf(c, x.shape.C)
	if err != nil {
		return nil, err
	}
	g, s := im.params[l.Name], im.params[l.Name+".bias"]
	for i := range w {
		g[i] *= w[i]
		s[i] *= w[i]
	}
	a := *x
	a.sole = true
	return &a, nil
}

// seqAdd is an Add of a constant to a pending or sequence value: a
// projection's bias, the attention's causal mask, GELU's one, a layer
// norm's ε, an embedding's positions or a layer norm's shift. It reports
// false when the addition is none of these.
func (im *importer) seqAdd(n *onnxpb.NodeProto, x *value, c *tensor) (*value, bool, error) {
	v, isScalar := c.scalar()
	switch p := x.pend.(type) {
	case *proj:
		b, err := biasOf(c, p.out)
		if err != nil {
			return nil, true, err
		}
		q := *p
		q.b = slices.Clone(p.b)
		for i := range b {
			q.b[i] += b[i]
		}
		if strings.Contains(q.base, ":") || strings.Contains(q.base, "/") {
			for _, in := range n.GetInput() {
				if _, ok := im.consts[in]; ok {
					q.base = trimWeight(in)
				}
			}
		}
		return &value{layer: x.layer, shape: x.shape, rank: 3, sole: true, tmajor: x.tmajor, pend: &q}, true, nil
	case *scores:
		if p.softmax || p.v != nil || p.causal {
			break
		}
		t := p.q.x.shape.W
		if len(c.dims) < 2 || c.dims[len(c.dims)-1] != t || c.dims[len(c.dims)-2] != t || c.size() != t*t {
			return nil, true, fmt.Errorf("a mask of shape %v on %d×%d scores", c.dims, t, t)
		}
		f := c.floats()
		for i := range t {
			for j := range t {
				if m := f[i*t+j]; (j <= i && m != 0) || (j > i && m > -1e4) {
					return nil, true, errors.New("a mask other than the causal one (0 on and below the diagonal, −∞ above)")
				}
			}
		}
		s := *p
		s.causal = true
		return &value{layer: x.layer, rank: x.rank, pend: &s}, true, nil
	case *rows: // the output projection's bias
		b, err := biasOf(c, p.x.shape.C)
		if err != nil {
			return nil, true, err
		}
		ob := im.params[p.x.layer+".o.bias"]
		for i := range b {
			ob[i] += b[i]
		}
		return x, true, nil
	case *erfGELU:
		if p.stage == 2 && isScalar && v == 1 {
			return im.stage(x, &erfGELU{x: p.x, name: p.name, stage: 3}), true, nil
		}
	case *decomposedLN:
		if p.stage == 4 && isScalar {
			return im.stage(x, &decomposedLN{x: p.x, name: p.name, stage: 5, eps: v}), true, nil
		}
	case nil:
		l := im.layer(x.layer)
		if l == nil || !x.sole || im.uses[n.GetInput()[slices.IndexFunc(n.GetInput(), func(in string) bool { return im.consts[in] == nil })]] != 1 {
			return nil, false, nil
		}
		switch l.Kind {
		case graph.Embedding:
			pos := im.params[l.Name+".pos"]
			if c.size() != len(pos) {
				return nil, true, fmt.Errorf("positions of shape %v for %d positions of %d values", c.dims, x.shape.W, l.Out)
			}
			for i, f := range c.floats() {
				pos[i] += f
			}
			return im.aliasOf(n, x), true, nil
		case graph.LayerNorm:
			b, err := biasOf(c, x.shape.C)
			if err != nil {
				return nil, true, err
			}
			for i := range b {
				im.params[l.Name+".bias"][i] += b[i]
			}
			return im.aliasOf(n, x), true, nil
		case graph.Attention:
			b, err := biasOf(c, x.shape.C)
			if err != nil {
				return nil, true, err
			}
			for i := range b {
				im.params[l.Name+".o.bias"][i] += b[i]
			}
			return im.aliasOf(n, x), true, nil
		}
	}
	return nil, false, nil
}

// seqMean is a mean over the positions (a global average pooling) or over
// each position's values (a decomposed layer norm's first and fourth
// steps).
func (im *importer) seqMean(n *onnxpb.NodeProto, x *value, axes []int64) (*value, error) {
	keep := attrInt(n, "keepdims", 1) != 0
	if len(axes) != 1 {
		return nil, fmt.Errorf("a mean over axes %v of a sequence", axes)
	}
	ax := (axes[0] + 3) % 3
	if x.tmajor && ax < 2 { // [T, batch, D]
		ax = 1 - ax
	}
	switch ax {
	case 1:
		v, err := im.ready(x)
		if err != nil {
			return nil, err
		}
		out := im.addLayer(graph.Layer{Name: im.name(n, "", "pool"), Kind: graph.GlobalAvgPool}, v)
		out.rank, out.tmajor = 2, false
		if keep {
			return nil, errors.New("a mean over the positions keeping its axis")
		}
		return out, nil
	case 2:
		if p, ok := x.pend.(*decomposedLN); ok && p.stage == 3 && keep {
			return im.stage(x, &decomposedLN{x: p.x, name: p.name, stage: 4}), nil
		}
		v, err := im.ready(x)
		if err != nil {
			return nil, err
		}
		if keep {
			return im.stage(v, &decomposedLN{x: v, name: n.GetInput()[0], stage: 1}), nil
		}
	}
	return nil, fmt.Errorf("a mean over axis %d of a sequence", axes[0])
}

// softmax normalizes the attention scores.
func (im *importer) softmax(n *onnxpb.NodeProto) (*value, error) {
	x := im.raw(n, 0)
	if x != nil {
		if s, ok := x.pend.(*scores); ok && !s.softmax && s.v == nil {
			if a := attrInt(n, "axis", -1); a == -1 || a == int64(x.rank-1) {
				c := *s
				c.softmax = true
				return &value{layer: x.layer, rank: x.rank, pend: &c}, nil
			}
		}
	}
	if x != nil {
		if r, err := im.ready(x); err == nil { // (a per-position head is made here)
			x = r
		}
	}
	if x != nil && x.pend == nil && (x.rank == 2 || x.rank == 3) && !x.ids && im.uses[n.GetOutput()[0]] == 1 {
		// Before opset 13 the default axis is 1, over a flattening: the
		// same for [batch, classes] only.
		if a := attrInt(n, "axis", -1); a == -1 || a == int64(x.rank-1) || (x.rank == 2 && a == 1) {
			return im.stage(x, &softmaxOut{x: x}), nil
		}
	}
	return nil, errors.New("lathe has a softmax inside attention (over the scores' last axis) and as the model's output (over the classes), nowhere else")
}

// softmaxOut is a softmax over the classes, which the graph's output may be
// (Network.Softmax).
type softmaxOut struct{ x *value }

// normalize takes a Sub, Div or Mul of the network's input by per-channel
// constants, before any layer reads it, into the input normalization:
// (x − Mean)/Std accumulates ((x − m)/s − m2 = (x − (m + m2·s))/s).
func (im *importer) normalize(n *onnxpb.NodeProto, x *value, ck int) (*value, error) {
	c, err := im.konst(n, ck)
	if err != nil || c == nil {
		return nil, errors.Join(errors.New("the input's normalization by a computed value"), err)
	}
	if len(im.net.Layers) > 0 || im.uses[n.GetInput()[1-ck]] != 1 || x.rank != 4 || (ck == 0 && n.GetOpType() != "Mul") {
		return nil, fmt.Errorf("%s of the network's input: lathe takes it only as the input's normalization, (x − mean)/std per channel, before any layer and read by nothing else", n.GetOpType())
	}
	ch := x.shape.C
	var v []float32
	switch dims := slices.DeleteFunc(slices.Clone(c.dims), func(d int) bool { return d == 1 }); {
	case c.size() == 1:
		v = slices.Repeat(c.floats(), ch)
	case len(dims) == 1 && dims[0] == ch && len(c.dims) >= 3 && c.dims[len(c.dims)-3] == ch:
		v = slices.Clone(c.floats())
	default:
		return nil, fmt.Errorf("the input normalized by a constant of shape %v, not one value per channel [1, %d, 1, 1]", c.dims, ch)
	}
	z := im.net.Normalize
	if z == nil {
		z = &graph.Normalization{Mean: make([]float32, ch), Std: slices.Repeat([]float32{1}, ch)}
		im.net.Normalize = z
	}
	for i, k := range v {
		switch n.GetOpType() {
		case "Sub":
			z.Mean[i] += k * z.Std[i]
		case "Div":
			z.Std[i] *= k
		case "Mul":
			z.Std[i] /= k
		}
	}
	out := *x
	out.sole = true
	return &out, nil
}
