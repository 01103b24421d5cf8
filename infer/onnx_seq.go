package infer

import (
	"encoding/binary"
	"math"

	"github.com/lathe-ml/lathe/graph"
)

// onnxInt64 is ONNX's INT64 element type: a text model's input, byte ids
// [batch, T].
const onnxInt64 = 7

// The sequence kinds in ONNX. A sequence {1, T, D} is an NCHW image [batch,
// D, 1, T], as every other layer holds it: a 1×1 convolution (the
// projections, the feed-forward layers) runs on it as it is.

// int64s adds an INT64 initializer.
func (g *onnxGraph) int64s(name string, v []int64, dims ...int) string {
	raw := make([]byte, 0, 8*len(v))
	for _, x := range v {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(x))
	}
	return g.init(name, onnxInt64, dims, raw)
}

// sequence adds an embedding, layer norm or attention core.
func (e *onnxExport) sequence(l *Layer, out *onnxValue) {
	g := e.g
	switch graph.Kind(l.Kind) {
	case graph.Embedding:
		// Gather the token rows [batch, T, D], add the positions, then
		// [batch, D, 1, T].
		tok := g.node("Gather", l.Name+".tok", []string{g.floats(l.Name+".table", l.w, l.In, l.Out), "input"}, attrInt("axis", 0))
		sum := g.node("Add", l.Name+".sum", []string{tok, g.floats(l.Name+".pos", l.b[:l.W*l.Out], l.W, l.Out)})
		tr := g.node("Transpose", l.Name+".ct", []string{sum}, attrInts("perm", 0, 2, 1))
		out.name = g.node("Reshape", l.Name, []string{tr, g.int64s(l.Name+".shape", []int64{0, int64(l.Out), 1, int64(l.W)}, 4)})
		out.c, out.h, out.w = l.Out, 1, l.W
	case graph.LayerNorm:
		// Over the channels: NHWC for LayerNormalization's last axis and back.
		nhwc := g.node("Transpose", l.Name+".nhwc", []string{e.valueQ(e.input(l, 0))}, attrInts("perm", 0, 2, 3, 1))
		ln := g.node("LayerNormalization", l.Name+".ln", []string{nhwc, g.floats(l.Name+".scale", l.scale, l.C), g.floats(l.Name+".shift", l.shift, l.C)},
			attrInt("axis", -1), attrFloat("epsilon", graph.LNEpsilon))
		out.name = g.node("Transpose", l.Name, []string{ln}, attrInts("perm", 0, 3, 1, 2))
	case graph.Attention:
		// q, k, v [batch, E, 1, T] → [batch, H, dh, T]; scores q_hᵀ·k_h/√dh
		// [batch, H, T, T] (causal: −∞ above the diagonal), softmax, times
		// v_hᵀ, back to [batch, E, 1, T].
		t, dh := l.W, l.C/l.heads
		heads := g.int64s(l.Name+".heads_shape", []int64{0, int64(l.heads), int64(dh), int64(t)}, 4)
		split := func(k int, part string) string {
			return g.node("Reshape", l.Name+"."+part+"_h", []string{e.valueQ(e.input(l, k)), heads})
		}
		q, k, v := split(0, "q"), split(1, "k"), split(2, "v")
		qt := g.node("Transpose", l.Name+".q_t", []string{q}, attrInts("perm", 0, 1, 3, 2))
		s := g.node("MatMul", l.Name+".qk", []string{qt, k})
		s = g.node("Mul", l.Name+".scores", []string{s, g.floats(l.Name+".scale", []float32{float32(1 / math.Sqrt(float64(dh)))})})
		if l.skipPadding { // −∞ on the keys past each sample's length
			_, live := e.lengths()
			neg := g.node("Where", l.Name+".pad", []string{g.node("Cast", l.Name+".live_b", []string{live}, attrInt("to", onnxBool)),
				g.floats(l.Name+".zero", []float32{0}), g.floats(l.Name+".ninf", []float32{float32(math.Inf(-1))})})
			neg = g.node("Reshape", l.Name+".pad_b", []string{neg, g.int64s(l.Name+".pad_shape", []int64{0, 1, 1, int64(t)}, 4)})
			s = g.node("Add", l.Name+".unpadded", []string{s, neg})
		}
		if l.causal {
			mask := make([]float32, t*t)
			for i := range t {
				for j := i + 1; j < t; j++ {
					mask[i*t+j] = float32(math.Inf(-1))
				}
			}
			s = g.node("Add", l.Name+".masked", []string{s, g.floats(l.Name+".mask", mask, t, t)})
		}
		p := g.node("Softmax", l.Name+".p", []string{s}, attrInt("axis", -1))
		vt := g.node("Transpose", l.Name+".v_t", []string{v}, attrInts("perm", 0, 1, 3, 2))
		ctx := g.node("MatMul", l.Name+".ctx", []string{p, vt})
		ctx = g.node("Transpose", l.Name+".ctx_t", []string{ctx}, attrInts("perm", 0, 1, 3, 2))
		out.name = g.node("Reshape", l.Name, []string{ctx, g.int64s(l.Name+".shape", []int64{0, int64(l.C), 1, int64(t)}, 4)})
		out.c, out.h, out.w = l.C, 1, t
	}
}

// onnxBool is ONNX's BOOL element type.
const onnxBool = 9

// lengths adds, once, each sample's length (graph.SeqLength: the
// positions up to its last non-zero id, at least 1) as floats [batch, 1],
// and which positions it covers as floats 0 or 1 [batch, T].
func (e *onnxExport) lengths() (lens, live string) {
	if e.lens != "" {
		return e.lens, e.live
	}
	g, t := e.g, e.m.Cols
	pos, pos0 := make([]float32, t), make([]float32, t)
	for i := range t {
		pos[i], pos0[i] = float32(i+1), float32(i)
	}
	zero := g.node("Equal", "pad.is_zero", []string{"input", g.int64s("pad.zero_id", []int64{0})})
	nz := g.node("Cast", "pad.nonzero", []string{g.node("Not", "pad.not_zero", []string{zero})}, attrInt("to", 1))
	last := g.node("ReduceMax", "pad.last", []string{g.node("Mul", "pad.ends", []string{nz, g.floats("pad.positions", pos, t)})}, attrInts("axes", 1), attrInt("keepdims", 1))
	e.lens = g.node("Max", "pad.lengths", []string{last, g.floats("pad.one", []float32{1})})
	covered := g.node("Less", "pad.covered", []string{g.floats("pad.positions0", pos0, t), e.lens})
	e.live = g.node("Cast", "pad.live", []string{covered}, attrInt("to", 1))
	return e.lens, e.live
}

// gelu adds x·Φ(x) = x·(1 + erf(x/√2))/2 after cur (opset 17 has no Gelu).
func (g *onnxGraph) gelu(name, cur string) string {
	half := g.node("Mul", name+".half", []string{cur, g.floats(name+".c_half", []float32{0.5})})
	z := g.node("Mul", name+".z", []string{cur, g.floats(name+".c_rsqrt2", []float32{float32(1 / math.Sqrt2)})})
	erf := g.node("Erf", name+".erf", []string{z})
	one := g.node("Add", name+".one", []string{erf, g.floats(name+".c_one", []float32{1})})
	return g.node("Mul", name+".gelu", []string{half, one})
}
