package infer

import (
	"github.com/lathe-ml/lathe/graph"
)

// The export's quantized arithmetic is the runtime's, operation for
// operation, so that onnxruntime computes the same bits:
//
//   - an activation's quantization is Mul by 1/scale, Round (ties to
//     even), Clip to the codes' range less the zero point, and Mul by the
//     scale — quantizer.Code and Apply's steps (QuantizeLinear divides by
//     the scale instead, which rounds differently near a code boundary);
//   - a layer the runtime runs on integer codes (the int8 kernel: its
//     weights and its input quantized) is ConvInteger or MatMulInteger of
//     the input's codes and the weight's, summed exactly in int32, then
//     Cast, Mul by s_x·s_w per output channel and Add the bias — the int8
//     kernel's y = float(Σ)·s + b, rounded after the product.
//
// ONNXOptions.QDQ keeps the QuantizeLinear/DequantizeLinear pairs instead,
// the form engines that fuse them expect.

// steps is value v quantized by q as float integers (the codes less the
// zero point): clip(round(v·(1/s)), qmin − z, qmax − z), made once per value.
func (e *onnxExport) steps(v *onnxValue, q *quantizer) string {
	if v.steps != "" && v.stepsQ == q {
		return v.steps
	}
	g, p := e.g, v.name
	cur := g.node("Mul", p+".q_scaled", []string{v.name, g.floats(p+".q_inv", []float32{q.Inv})})
	cur = g.node("Round", p+".q_round", []string{cur})
	cur = g.node("Clip", p+".q_steps", []string{cur,
		g.floats(p+".q_min", []float32{q.Qmin - q.Zero}), g.floats(p+".q_max", []float32{q.Qmax - q.Zero})})
	v.steps, v.stepsQ = cur, q
	return cur
}

// fakeQuant is v with its pending quantization applied: the steps times
// the scale, as the runtime holds quantized activations.
func (e *onnxExport) fakeQuant(v *onnxValue) string {
	if e.qdq {
		return e.g.actQuant(v.name, v.name, v.pending)
	}
	return e.g.node("Mul", v.name+".q", []string{e.steps(v, v.pending), e.g.floats(v.name+".q_scale", []float32{v.pending.Scale})})
}

// codes is v's codes as the int8 kernel reads them: unsigned bytes (the
// code plus the kernel's offset), with their zero point.
func (e *onnxExport) codes(v *onnxValue, k8 *int8Layer) (codes, zero string) {
	g, p, q := e.g, v.name, k8.in
	if v.codes == "" || v.codesQ != q {
		cur := g.node("Add", p+".codes_f", []string{e.steps(v, q), g.floats(p+".codes_zero_f", []float32{q.Zero + float32(k8.xOff)})})
		v.codes, v.codesQ = g.node("Cast", p+".codes", []string{cur}, attrInt("to", onnxUint8)), q
		v.codesZero = g.init(p+".codes_zero", onnxUint8, nil, []byte{byte(int32(q.Zero) + k8.xOff)})
	}
	return v.codes, v.codesZero
}

// integerForm says whether layer l is exported on integer codes: it has
// the int8 kernel, one weight zero point for all its rows (ONNX's integer
// convolution takes one) and codes in 8 bits.
func (e *onnxExport) integerForm(l *Layer) bool {
	if e.qdq || l.k8 == nil || l.wq == nil || l.wq.Bits > 8 {
		return false
	}
	for _, z := range l.wq.Zero {
		if z != l.wq.Zero[0] {
			return false
		}
	}
	return true
}

// integer adds layer l on integer codes (integerForm): in, the value it
// reads; dims and src the weight's ONNX shape and element order (for a
// linear layer, its transpose [in, out], MatMulInteger's). It returns the
// output before the activation.
func (e *onnxExport) integer(l *Layer, in *onnxValue, dims []int, src func(int) int) (string, error) {
	g := e.g
	w, typ, err := g.weightCodes(l, dims, src)
	if err != nil {
		return "", err
	}
	switch typ { // 4-bit codes widened for the integer operators
	case onnxInt4:
		typ, w = onnxInt8, g.node("Cast", l.Name+".weight_i8", []string{w}, attrInt("to", onnxInt8))
	case onnxUint4:
		typ, w = onnxUint8, g.node("Cast", l.Name+".weight_u8", []string{w}, attrInt("to", onnxUint8))
	}
	wzero := g.init(l.Name+".weight_zero", typ, nil, ints(typ, l.wq.Zero[:1]))
	x, xzero := e.codes(in, l.k8)
	e.info.Integer = append(e.info.Integer, l.Name)
	var acc string
	sdims := []int{l.Out}
	if graph.Kind(l.Kind) == graph.Conv {
		acc = g.node("ConvInteger", l.Name+".sum", []string{x, w, xzero, wzero}, window(l)...)
		sdims = []int{l.Out, 1, 1}
	} else {
		acc = g.node("MatMulInteger", l.Name+".sum", []string{x, w, xzero, wzero})
	}
	cur := g.node("Cast", l.Name+".sum_f", []string{acc}, attrInt("to", onnxFloat))
	cur = g.node("Mul", l.Name+".scaled", []string{cur, g.floats(l.Name+".scale", l.k8.scale, sdims...)})
	return g.node("Add", l.Name, []string{cur, g.floats(l.Name+".bias", l.b, sdims...)}), nil
}
