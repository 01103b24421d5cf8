package infer

import (
	"fmt"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// onnxValue is a layer's output in the ONNX graph: the tensor's name, its
// shape — an NCHW image c×h×w, or a flat [batch, c] — and the activation
// quantization still to apply to it (quantization is monotone and
// elementwise, so max-pooling and flattening commute with it: it is
// placed right before the next layer that computes with the values).
type onnxValue struct {
	name     string
	flat     bool
	c, h, w  int
	pending  *quantizer
	pendFrom string // the layer whose quantization is pending
	qname    string // the name with the quantization applied, once made
	// The value quantized (onnx_int.go), once made: its steps and its
	// codes, and the quantizers they were made with.
	steps, codes, codesZero string
	stepsQ, codesQ          *quantizer
}

// onnxExport walks a loaded model's layers into an onnxGraph.
type onnxExport struct {
	g    *onnxGraph
	m    *Model
	info *ONNXInfo
	outs []onnxValue
	// The samples' lengths [batch, 1] and which positions they cover
	// [batch, T] (float 0 or 1), made once where a layer skips padding.
	lens, live string
	normed     string    // the normalized input, once made
	qdq        bool      // ONNXOptions.QDQ
	image      onnxValue // the network's input as layers read it
}

// input is the value layer l reads as its k-th input.
func (e *onnxExport) input(l *Layer, k int) *onnxValue {
	if j := l.Inputs[k]; j >= 0 {
		return &e.outs[j]
	}
	if e.image.name == "" { // made once: what is made from it is shared
		e.image = onnxValue{name: e.inputName(), c: e.m.Channels, h: e.m.Rows, w: e.m.Cols}
	}
	return &e.image
}

// inputName is the network's input as its first layers read it:
// normalized (Sub, Div per channel) when the network says so.
func (e *onnxExport) inputName() string {
	z := e.m.Net.Normalize
	if z == nil {
		return "input"
	}
	if e.normed == "" {
		c := len(z.Mean)
		sub := e.g.node("Sub", "input.centered", []string{"input", e.g.floats("input.mean", z.Mean, 1, c, 1, 1)})
		e.normed = e.g.node("Div", "input.normalized", []string{sub, e.g.floats("input.std", z.Std, 1, c, 1, 1)})
	}
	return e.normed
}

// quantized is the name of layer j's output with its pending
// quantization applied (made once, shared by every reader).
func (e *onnxExport) quantized(j int) string {
	v := &e.outs[j]
	return e.valueQ(v)
}

func (e *onnxExport) valueQ(v *onnxValue) string {
	if v.pending == nil {
		return v.name
	}
	if v.qname == "" {
		v.qname = e.fakeQuant(v)
	}
	return v.qname
}

// flatten makes an image value a [batch, features] one in lathe's NHWC
// order (ONNX holds images NCHW).
func (e *onnxExport) flatten(name string, v onnxValue) onnxValue {
	if v.flat {
		return v
	}
	cur := v.name
	if v.c > 1 {
		cur = e.g.node("Transpose", name+".nhwc", []string{cur}, attrInts("perm", 0, 2, 3, 1))
	}
	cur = e.g.node("Flatten", name+".flat", []string{cur}, attrInt("axis", 1))
	return onnxValue{name: cur, flat: true, c: v.c * v.h * v.w, h: 1, w: 1, pending: v.pending, pendFrom: v.pendFrom}
}

// act adds a layer's activation after cur.
func (e *onnxExport) act(l *Layer, cur string) string {
	switch l.act {
	case graph.ReLU:
		return e.g.node("Relu", l.Name+".relu", []string{cur})
	case graph.ReLU6:
		return e.g.node("Clip", l.Name+".relu6", []string{cur, e.g.floats(l.Name+".min", []float32{0}), e.g.floats(l.Name+".max", []float32{6})})
	case graph.GELU:
		return e.g.gelu(l.Name, cur)
	case graph.Sigmoid:
		return e.g.node("Sigmoid", l.Name+".sigmoid", []string{cur})
	case graph.SiLU:
		s := e.g.node("Sigmoid", l.Name+".sigmoid", []string{cur})
		return e.g.node("Mul", l.Name+".silu", []string{cur, s})
	}
	return cur
}

// window is a pooling's or convolution's attributes: a convolution over
// one-row images (Layer.oneRow) is a 1×K one, unpadded above and below.
func window(l *Layer) []*onnxpb.AttributeProto {
	k, s, p := int64(l.K), int64(l.Stride), int64(l.Pad)
	if l.oneRow {
		return []*onnxpb.AttributeProto{attrInts("kernel_shape", 1, k), attrInts("strides", s, s), attrInts("pads", 0, p, 0, p)}
	}
	return []*onnxpb.AttributeProto{attrInts("kernel_shape", k, k), attrInts("strides", s, s), attrInts("pads", p, p, p, p)}
}

// kernelRows is the height of a convolution's filters as the runtime holds
// them: 1 for one over one-row images (Layer.oneRow), else K.
func kernelRows(l *Layer) int {
	if l.oneRow {
		return 1
	}
	return l.K
}

// layer adds layer i.
func (e *onnxExport) layer(i int, l *Layer) error {
	src := e.input(l, 0) // (its quantized name is made once for every reader)
	in := *src
	out := onnxValue{c: in.c, h: l.OH, w: l.OW, flat: in.flat} // (a batch norm or addition of [batch, C] stays flat)
	switch graph.Kind(l.Kind) {
	case graph.Linear:
		v := src // (a flat value's quantized forms are shared by its readers)
		if !src.flat {
			flat := e.flatten(l.Name, in)
			v = &flat
		}
		out = onnxValue{flat: true, c: l.Out, h: 1, w: 1}
		if e.integerForm(l) {
			name, ok, err := e.integer(l, v, []int{l.Out, l.In}, func(i int) int { return i })
			if err != nil {
				return err
			}
			if out.name = name; ok {
				break
			}
		}
		wname, err := e.g.weight(l, []int{l.Out, l.In}, func(i int) int { return i })
		if err != nil {
			return err
		}
		out.name = e.g.node("Gemm", l.Name, []string{e.valueQ(v), wname, e.g.floats(l.Name+".bias", l.b, l.Out)}, attrInt("transB", 1))
	case graph.Conv:
		if in.flat {
			return fmt.Errorf("infer: layer %s: a convolution after a fully connected layer has no image to run on", l.Name)
		}
		k, kh := l.K, kernelRows(l)
		ch := l.In / (kh * k) // channels per group
		// lathe's filters are [out][ky][kx][c] (its im2col order), ONNX's [out][c][ky][kx].
		perm := func(i int) int {
			o, r := i/(ch*kh*k), i%(ch*kh*k)
			ci, ky, kx := r/(kh*k), r%(kh*k)/k, r%k
			return o*kh*k*ch + (ky*k+kx)*ch + ci
		}
		out.c = l.Out
		if e.integerForm(l) {
			name, ok, err := e.integer(l, src, []int{l.Out, ch, kh, k}, perm)
			if err != nil {
				return err
			}
			if out.name = name; ok {
				break
			}
		}
		wname, err := e.g.weight(l, []int{l.Out, ch, kh, k}, perm)
		if err != nil {
			return err
		}
		out.name = e.g.node("Conv", l.Name, []string{e.valueQ(src), wname, e.g.floats(l.Name+".bias", l.b, l.Out)},
			append(window(l), attrInt("group", int64(l.Groups)))...)
	case graph.MaxPool:
		if in.flat {
			return fmt.Errorf("infer: layer %s: max-pooling after a fully connected layer has no image to run on", l.Name)
		}
		out.pending, out.pendFrom = in.pending, in.pendFrom // pooled codes are codes
		out.name = e.g.node("MaxPool", l.Name, []string{in.name}, window(l)...)
	case graph.AvgPool:
		out.name = e.g.node("AveragePool", l.Name, []string{e.valueQ(src)}, append(window(l), attrInt("count_include_pad", 1))...)
	case graph.GlobalAvgPool:
		out.h, out.w = 1, 1
		if l.skipPadding { // Σ over the live positions / length
			lens, live := e.lengths()
			t := int64(l.W)
			masked := e.g.node("Mul", l.Name+".live", []string{e.valueQ(src), e.g.node("Reshape", l.Name+".live_b", []string{live, e.g.int64s(l.Name+".live_shape", []int64{0, 1, 1, t}, 4)})})
			sum := e.g.node("ReduceSum", l.Name+".sum", []string{masked, e.g.int64s(l.Name+".axes", []int64{2, 3}, 2)}, attrInt("keepdims", 1))
			n := e.g.node("Reshape", l.Name+".n", []string{lens, e.g.int64s(l.Name+".n_shape", []int64{0, 1, 1, 1}, 4)})
			out.name = e.g.node("Div", l.Name, []string{sum, n})
			break
		}
		out.name = e.g.node("GlobalAveragePool", l.Name, []string{e.valueQ(src)})
	case graph.Flatten:
		out = e.flatten(l.Name, in)
	case graph.BatchNorm:
		dims := []int{l.C, 1, 1}
		if in.flat {
			dims = []int{l.C}
		}
		mul := e.g.node("Mul", l.Name+".scale", []string{e.valueQ(src), e.g.floats(l.Name+".scale_c", l.scale, dims...)})
		out.name = e.g.node("Add", l.Name, []string{mul, e.g.floats(l.Name+".shift_c", l.shift, dims...)})
	case graph.Add:
		names := []string{e.valueQ(src)}
		for k := 1; k < len(l.Inputs); k++ {
			names = append(names, e.valueQ(e.input(l, k)))
		}
		out.name = e.g.node("Sum", l.Name, names)
	case graph.Embedding, graph.LayerNorm, graph.Attention:
		e.sequence(l, &out)
	default:
		return fmt.Errorf("infer: layer %s: ONNX export has no %s layer", l.Name, l.Kind)
	}
	if l.Weighted() || graph.Kind(l.Kind) == graph.BatchNorm || graph.Kind(l.Kind) == graph.Add {
		out.name = e.act(l, out.name)
	}
	if l.actQ != nil {
		e.info.ActQuant = append(e.info.ActQuant, l.Name)
		out.pending, out.pendFrom, out.qname = l.actQ, l.Name, ""
	}
	if l.wq != nil {
		e.info.Quantized = append(e.info.Quantized, l.Name)
		e.info.WeightBits[l.Name] = l.wq.Bits
	}
	e.outs[i] = out
	return nil
}
