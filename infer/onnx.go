package infer

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// ONNX tensor element types (TensorProto.DataType).
const (
	onnxFloat  = 1
	onnxUint8  = 2
	onnxInt8   = 3
	onnxDouble = 11
	onnxUint4  = 21
	onnxInt4   = 22
)

// ONNXOptions controls ExportONNX.
type ONNXOptions struct {
	// Int8 widens 4-bit weights to 8 bits (opset 17) instead of storing
	// them as INT4/UINT4 (opset 21), for engines without 4-bit types.
	Int8 bool
	// Producer is written as the model's producer_version.
	Producer string
	// QDQ writes quantized activations as QuantizeLinear/DequantizeLinear
	// pairs and every quantized layer on dequantized weights — the form
	// engines that fuse such pairs into integer kernels expect — instead
	// of the runtime's own arithmetic (onnx_int.go). onnxruntime then
	// agrees with the runtime except where a value falls within a float
	// rounding of a code boundary.
	QDQ bool
}

// ONNXInfo says what ExportONNX wrote.
type ONNXInfo struct {
	Opset      int
	Bytes      int
	Nodes      int
	Quantized  []string // layers whose weights are QuantizeLinear/DequantizeLinear pairs
	ActQuant   []string // layers whose outputs are fake-quantized
	Integer    []string // layers computed on integer codes (ConvInteger, MatMulInteger)
	WeightBits map[string]int
}

// ExportONNX writes a model file as a standard ONNX model. The input is
// float32 [batch, channels, rows, cols] holding pixel/255, the output
// "logits" [batch, classes]. Thinned layers are plain smaller layers;
// quantized weights are stored as their integer codes with a
// DequantizeLinear (per output channel where the file has a scale per
// channel) — 4-bit weights as INT4/UINT4 under opset 21 unless opt.Int8,
// 2- and 3-bit and 5- to 8-bit weights as INT8/UINT8; quantized
// activations and the layers the runtime runs on integer codes are the
// runtime's arithmetic step for step (onnx_int.go; opt.QDQ: Q/DQ pairs
// instead). It returns an error naming the layer when one cannot be
// expressed.
func ExportONNX(f *checkpoint.File, w io.Writer, opt ONNXOptions) (*ONNXInfo, error) {
	m, err := parse(f)
	if err != nil {
		return nil, err
	}
	g := &onnxGraph{int4: !opt.Int8}
	info := &ONNXInfo{Opset: 17, WeightBits: map[string]int{}}
	e := &onnxExport{g: g, m: m, info: info, outs: make([]onnxValue, len(m.Layers)), qdq: opt.QDQ}
	for i, l := range m.Layers {
		if err := e.layer(i, l); err != nil {
			return nil, err
		}
	}
	last := e.outs[len(e.outs)-1]
	switch {
	case m.Net.PerPosition && last.h == 1 && last.c == m.Classes: // [batch, classes, 1, T] → [batch, T, classes]
		cur := g.node("Transpose", "logits.nhwc", []string{e.quantized(len(m.Layers) - 1)}, attrInts("perm", 0, 2, 3, 1))
		g.node("Reshape", "logits", []string{cur, g.int64s("logits.shape", []int64{0, int64(last.w), int64(m.Classes)}, 3)})
	case !last.flat:
		return nil, fmt.Errorf("infer: the model ends in a %dx%dx%d image, not a fully connected layer; ONNX's output is [batch, %d]", last.c, last.h, last.w, m.Classes)
	default:
		e.quantized(len(m.Layers) - 1) // a quantized last layer's output
		g.nodes[len(g.nodes)-1].Output[0] = "logits"
	}
	if m.Net.Softmax { // the probabilities, under the output's name
		out := g.nodes[len(g.nodes)-1]
		out.Output[0], out.Name = "scores", proto.String("scores")
		g.node("Softmax", "logits", []string{"scores"}, attrInt("axis", -1))
	}
	if g.usedInt4 {
		info.Opset = 21
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(g.model(m, f, info.Opset, opt.Producer))
	if err != nil {
		return nil, fmt.Errorf("infer: onnx: %w", err)
	}
	info.Bytes, info.Nodes = len(b), len(g.nodes)
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	return info, nil
}

type onnxGraph struct {
	nodes          []*onnxpb.NodeProto
	inits          []*onnxpb.TensorProto
	int4, usedInt4 bool
}

// node adds a node whose output is named after it and returns that name.
func (g *onnxGraph) node(op, name string, in []string, attrs ...*onnxpb.AttributeProto) string {
	g.nodes = append(g.nodes, &onnxpb.NodeProto{Input: in, Output: []string{name}, Name: proto.String(name), OpType: proto.String(op), Attribute: attrs})
	return name
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), I: proto.Int64(v), Type: onnxpb.AttributeProto_INT.Enum()}
}

func attrFloat(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), F: proto.Float32(v), Type: onnxpb.AttributeProto_FLOAT.Enum()}
}

func attrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Ints: v, Type: onnxpb.AttributeProto_INTS.Enum()}
}

// init adds an initializer and returns its name.
func (g *onnxGraph) init(name string, typ int, dims []int, raw []byte) string {
	t := &onnxpb.TensorProto{DataType: proto.Int32(int32(typ)), Name: proto.String(name), RawData: raw}
	for _, d := range dims {
		t.Dims = append(t.Dims, int64(d))
	}
	g.inits = append(g.inits, t)
	return name
}

func (g *onnxGraph) floats(name string, v []float32, dims ...int) string {
	raw := make([]byte, 0, 4*len(v))
	for _, x := range v {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
	}
	return g.init(name, onnxFloat, dims, raw)
}

// intType picks the narrowest ONNX integer type that holds [lo, hi]: 4-bit
// types when allowed and wanted, else INT8 or UINT8.
func intType(lo, hi int32, four bool) (int, error) {
	switch {
	case four && lo >= -8 && hi <= 7:
		return onnxInt4, nil
	case four && lo >= 0 && hi <= 15:
		return onnxUint4, nil
	case lo >= -128 && hi <= 127:
		return onnxInt8, nil
	case lo >= 0 && hi <= 255:
		return onnxUint8, nil
	}
	return 0, fmt.Errorf("integer codes %d..%d fit no 8-bit type", lo, hi)
}

// ints packs integer codes as an ONNX type's raw data: one byte each, or
// two 4-bit values per byte, the first in the low nibble.
func ints(typ int, v []int32) []byte {
	if typ == onnxInt4 || typ == onnxUint4 {
		raw := make([]byte, (len(v)+1)/2)
		for i, x := range v {
			raw[i/2] |= byte(x&0xf) << (4 * (i % 2))
		}
		return raw
	}
	raw := make([]byte, len(v))
	for i, x := range v {
		raw[i] = byte(x)
	}
	return raw
}

// weight adds a layer's weight in ONNX's shape, element i taken from the
// file's element src(i): floats, or the integer codes and a
// DequantizeLinear when the file stores it quantized. It returns the name
// of the float weight.
func (g *onnxGraph) weight(l *Layer, dims []int, src func(int) int) (string, error) {
	if q := l.wq; q != nil {
		codes, typ, err := g.weightCodes(l, dims, src)
		if err != nil {
			return "", err
		}
		zero := g.init(l.Name+".weight_zero", typ, scaleDims(q), ints(typ, q.Zero))
		scale := g.floats(l.Name+".weight_scale", q.Scale, scaleDims(q)...)
		return g.node("DequantizeLinear", l.Name+".weight", []string{codes, scale, zero}, attrInt("axis", 0)), nil
	}
	v := make([]float32, len(l.w))
	for i := range v {
		v[i] = l.w[src(i)]
	}
	return g.floats(l.Name+".weight", v, dims...), nil
}

// scaleDims is the shape of a quantized weight's scales and zero points:
// a scalar for one per tensor, else one per output channel.
func scaleDims(q *checkpoint.Quant) []int {
	if len(q.Scale) > 1 {
		return []int{len(q.Scale)}
	}
	return nil
}

// weightCodes adds a quantized weight's integer codes in ONNX's shape
// (element i the file's element src(i)), in the narrowest type that holds
// them (and the zero points); it returns their name and the type.
func (g *onnxGraph) weightCodes(l *Layer, dims []int, src func(int) int) (codes string, typ int, err error) {
	codes, typ, _, err = g.weightCodesAs(l, dims, src, false)
	return codes, typ, err
}

// weightCodesAs is weightCodes; with unsigned, signed codes go as uint8
// shifted by 128 (shift: the zero point must move as much), the same
// differences w − z_w.
func (g *onnxGraph) weightCodesAs(l *Layer, dims []int, src func(int) int, unsigned bool) (codes string, typ int, shift int32, err error) {
	q, n := l.wq, len(l.w)
	if len(q.Codes) != n || (len(q.Scale) != 1 && len(q.Scale) != l.Out) || len(q.Zero) != len(q.Scale) {
		return "", 0, 0, fmt.Errorf("infer: layer %s: %d codes, %d scales and %d zero points for a %d×%d weight",
			l.Name, len(q.Codes), len(q.Scale), len(q.Zero), l.Out, l.In)
	}
	// The type must hold every code and zero point: symmetric b-bit
	// codes are ±(2^(b−1)−1), asymmetric ones 0…2^b−1.
	lo, hi := q.Zero[0], q.Zero[0]
	for _, v := range append(slices.Clone(q.Codes), q.Zero...) {
		lo, hi = min(lo, v), max(hi, v)
	}
	if q.QMin < 0 {
		lo, hi = min(lo, q.QMin), max(hi, -q.QMin)
	} else {
		lo, hi = min(lo, q.QMin), max(hi, q.QMin+int32(1)<<q.Bits-1)
	}
	if typ, err = intType(lo, hi, g.int4 && q.Bits == 4); err != nil {
		return "", 0, 0, fmt.Errorf("infer: layer %s: %d-bit weights: %w", l.Name, q.Bits, err)
	}
	v := make([]int32, n)
	for i := range v {
		v[i] = q.Codes[src(i)]
	}
	if unsigned && (typ == onnxInt4 || typ == onnxInt8) {
		for i := range v {
			v[i] += 128
		}
		typ, shift = onnxUint8, 128
	}
	if typ == onnxInt4 || typ == onnxUint4 {
		g.usedInt4 = true
	}
	return g.init(l.Name+".weight_q", typ, dims, ints(typ, v)), typ, shift, nil
}

// actQuant fake-quantizes a layer's output as training did: clipped to
// the codes' range, quantized with ties to even, and dequantized.
func (g *onnxGraph) actQuant(name, cur string, q *quantizer) string {
	lo, hi := int32(q.Qmin), int32(q.Qmax)
	typ, _ := intType(lo, hi, false) // 2 to 8 bits: always fits
	full := (typ == onnxInt8 && lo == -128 && hi == 127) || (typ == onnxUint8 && lo == 0 && hi == 255)
	if !full {
		cur = g.node("Clip", name+".act_clip", []string{cur,
			g.floats(name+".act_min", []float32{(q.Qmin - q.Zero) * q.Scale}),
			g.floats(name+".act_max", []float32{(q.Qmax - q.Zero) * q.Scale})})
	}
	scale := g.floats(name+".act_scale", []float32{q.Scale})
	zero := g.init(name+".act_zero", typ, nil, ints(typ, []int32{int32(q.Zero)}))
	cur = g.node("QuantizeLinear", name+".act_q", []string{cur, scale, zero})
	return g.node("DequantizeLinear", name+".act", []string{cur, scale, zero})
}

func valueInfo(name string, dims ...any) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		switch d := d.(type) {
		case int:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}
		case string:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	typ := onnxFloat
	if name == "input" && len(dims) == 2 { // a text model's byte ids
		typ = onnxInt64
	}
	tensor := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(typ)), Shape: shape}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tensor}}}
}

// model is the ModelProto.
func (g *onnxGraph) model(m *Model, f *checkpoint.File, opset int, producer string) *onnxpb.ModelProto {
	ir := int64(8) // opset 17
	if opset >= 21 {
		ir = 10
	}
	doc, input := "input: pixel/255 as float32 [batch, channels, rows, cols]; output: logits", valueInfo("input", "batch", m.Channels, m.Rows, m.Cols)
	output := valueInfo("logits", "batch", m.Classes)
	if m.embeds() {
		doc, input = "input: byte ids as int64 [batch, positions]; output: logits", valueInfo("input", "batch", m.Cols)
	}
	if m.Net.PerPosition {
		doc, output = "input: byte ids as int64 [batch, positions]; output: the next byte's logits at every position [batch, positions, 256]", valueInfo("logits", "batch", m.Cols, m.Classes)
	}
	md := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(ir),
		ProducerName:    proto.String("lathe"),
		ProducerVersion: proto.String(producer),
		Domain:          proto.String("ml.lathe"),
		DocString:       proto.String(fmt.Sprintf("exported from a lathe model file of job %q", f.Job)),
		Graph: &onnxpb.GraphProto{
			Node:        g.nodes,
			Name:        proto.String("lathe"),
			Initializer: g.inits,
			DocString:   proto.String(doc),
			Input:       []*onnxpb.ValueInfoProto{input},
			Output:      []*onnxpb.ValueInfoProto{output},
		},
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(int64(opset))}},
	}
	for _, kv := range [][2]string{{"lathe.job", f.Job}, {"lathe.source_sha256", f.SHA256}, {"lathe.version", f.Version}} {
		md.MetadataProps = append(md.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(kv[0]), Value: proto.String(kv[1])})
	}
	return md
}
