package onnx

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// nn.MultiheadAttention's own export (and nn.TransformerEncoderLayer's,
// which calls it): the sequence is made time-major ([T, batch, E], a
// Transpose, unless the model already is), one packed in_proj MatMul and
// its bias give q, k and v as three Slices of its outputs, each is viewed
// as [T, batch·H, dh] — the heads folded into the batch — and transposed
// to [batch·H, T, dh] (k to [batch·H, dh, T]); q is scaled, q·kᵀ (plus a
// causal mask) goes through Softmax and times v, the context goes back
// to [T, batch·H, dh] and [T·batch, E] for out_proj (Gemm), then to [T,
// batch, E]. The shape arithmetic around it follows the batch's multiples
// (batchTimes). The pieces are the ones seq.go follows — projections,
// heads (folded), scores — and become one lathe attention layer.

// rows is the attention's output as ONNX has it, [T·batch, E], until a
// Reshape makes it [T, batch, E] again.
type rows struct{ x *value }

// slice takes a pending projection's outputs start..end: the packed
// in_proj's q, k or v.
func (im *importer) slice(n *onnxpb.NodeProto) (*value, error) {
	x := im.raw(n, 0)
	var p *proj
	if x != nil {
		p, _ = x.pend.(*proj)
	}
	if p == nil || p.made != nil {
		return nil, errors.New("lathe slices only a linear layer's outputs (nn.MultiheadAttention's packed q, k, v projection)")
	}
	starts, ends, axes, steps := attrInts(n, "starts"), attrInts(n, "ends"), attrInts(n, "axes"), []int64(nil)
	for k, dst := range []*[]int64{&starts, &ends, &axes, &steps} {
		c, err := im.konst(n, k+1)
		if err != nil {
			return nil, err
		}
		if c != nil {
			*dst = c.ints()
		}
	}
	last := len(axes) == 1 && (axes[0] == -1 || axes[0] == 2)
	if len(starts) != 1 || len(ends) != 1 || !last || (steps != nil && !slices.Equal(steps, []int64{1})) {
		return nil, fmt.Errorf("starts %v, ends %v, axes %v, steps %v: lathe slices a projection's outputs (the last axis, step 1)", starts, ends, axes, steps)
	}
	out := int64(p.out)
	at := func(i int64) int64 {
		if i < 0 {
			i += out
		}
		return min(max(i, 0), out)
	}
	lo, hi := at(starts[0]), at(ends[0])
	if lo >= hi {
		return nil, fmt.Errorf("an empty slice %d..%d of %d outputs", starts[0], ends[0], out)
	}
	in := int64(p.x.shape.C)
	q := &proj{x: p.x, w: slices.Clone(p.w[lo*in : hi*in]), b: slices.Clone(p.b[lo:hi]), out: int(hi - lo), base: p.base, node: p.node, whole: p}
	return &value{layer: x.layer, shape: graph.Shape{H: 1, W: x.shape.W, C: q.out}, rank: 3, sole: true, tmajor: x.tmajor, pend: q}, nil
}

// foldHeads views a time-major projection [T, batch, E] as [T, batch·H,
// dh].
func (im *importer) foldHeads(x *value, p *proj, target []int64) (*value, bool, error) {
	if len(target) == 3 && (target[0] == int64(x.shape.W) || target[0] == 0) {
		if h, ok := batchFactor(target[1]); ok && (target[2] > 0 || target[2] == -1) {
			if int64(p.out)%h != 0 || (target[2] > 0 && target[2]*h != int64(p.out)) {
				return nil, true, fmt.Errorf("%d values per position viewed as %d heads of %d", p.out, h, target[2])
			}
			hd := &heads{p: p, h: int(h), dh: p.out / int(h), perm: []int{1, 0, 2}, folded: true, scale: 1}
			return &value{layer: x.layer, rank: 3, pend: hd}, true, nil
		}
	}
	return nil, true, fmt.Errorf("a time-major projection [T, batch, %d] viewed as %s: lathe follows nn.MultiheadAttention's [T, batch·heads, head size]", p.out, shapeString(target))
}

// joinHeads is the folded context [T, batch·H, dh] viewed as [T·batch,
// E] for the output projection.
func (im *importer) joinHeads(x *value, s *scores, target []int64) (*value, bool, error) {
	t, e := int64(s.q.x.shape.W), int64(s.q.out)
	if s.v != nil && !s.joined && slices.Equal(s.perm, []int{1, 0, 2}) && len(target) == 2 &&
		(target[0] == batchTimes(t) && (target[1] == e || target[1] == -1) || target[0] == -1 && target[1] == e) {
		c := *s
		c.joined = true
		return &value{layer: x.layer, rank: 2, pend: &c}, true, nil
	}
	return nil, true, fmt.Errorf("reshapes the attention's heads to %s, not back to [T·batch, %d] for its output projection", shapeString(target), e)
}

// unfoldRows is the attention's output [T·batch, E] viewed as [T, batch,
// E] again.
func (im *importer) unfoldRows(x *value, r *rows, target []int64) (*value, bool, error) {
	t, e := int64(r.x.shape.W), int64(r.x.shape.C)
	if len(target) == 3 && target[0] == t && target[1] == batch && (target[2] == e || target[2] == -1) {
		out := *r.x
		return &out, true, nil
	}
	return nil, true, fmt.Errorf("reshapes the attention's output [T·batch, %d] to %s, not back to [T, batch, %d]", e, shapeString(target), e)
}

// transpose3 swaps a sequence's first two axes (batch-major and
// time-major), or permutes folded heads.
func (im *importer) transpose3(n *onnxpb.NodeProto, x *value, perm []int64) (*value, error) {
	if !isPerm(perm) {
		return nil, fmt.Errorf("perm %v is not a permutation", perm)
	}
	compose := func(p []int) []int {
		out := make([]int, 3)
		for i, a := range perm {
			out[i] = p[a]
		}
		return out
	}
	switch h := x.pend.(type) {
	case *heads:
		if h.folded {
			c := *h
			c.perm = compose(h.perm)
			return &value{layer: x.layer, rank: 3, pend: &c}, nil
		}
	case *scores:
		if h.folded && h.v != nil && !h.joined {
			c := *h
			c.perm = compose(h.perm)
			return &value{layer: x.layer, rank: 3, pend: &c}, nil
		}
	case nil, *proj:
		if x.rank == 3 && slices.Equal(perm, []int64{1, 0, 2}) {
			v, err := im.ready(x)
			if err != nil {
				return nil, err
			}
			out := im.aliasOf(n, v)
			out.tmajor = !v.tmajor
			return out, nil
		}
	}
	return nil, errors.New("lathe transposes a sequence's batch and time axes ([batch, T, D] ↔ [T, batch, D]) and an attention pattern's heads, nothing else")
}

func isPerm(p []int64) bool {
	seen := make([]bool, len(p))
	for _, a := range p {
		if a < 0 || a >= int64(len(p)) || seen[a] {
			return false
		}
		seen[a] = true
	}
	return true
}

// shapeString writes a target shape with the batch's multiples named.
func shapeString(s []int64) string {
	out := "["
	for i, d := range s {
		if i > 0 {
			out += ", "
		}
		switch k, ok := batchFactor(d); {
		case ok && k == 1:
			out += "batch"
		case ok:
			out += fmt.Sprintf("batch·%d", k)
		default:
			out += fmt.Sprint(d)
		}
	}
	return out + "]"
}

// packedName is the attention layer's name-to-be from its packed
// projection's bias or weight ("enc.self_attn.in_proj_bias": enc.self_attn).
func packedName(base string, n *onnxpb.NodeProto) string {
	for _, suf := range []string{".in_proj_bias", ".in_proj_weight"} {
		if pre, ok := strings.CutSuffix(base, suf); ok {
			return pre
		}
	}
	if ins := n.GetInput(); len(ins) > 1 {
		if pre, ok := strings.CutSuffix(trimWeight(ins[1]), ".out_proj"); ok {
			return pre
		}
	}
	return ""
}
