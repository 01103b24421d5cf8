package infer

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/graph"
)

// doubles adds a float64 initializer.
func (g *onnxGraph) doubles(name string, v []float64, dims ...int) string {
	raw := make([]byte, 0, 8*len(v))
	for _, x := range v {
		raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(x))
	}
	return g.init(name, onnxDouble, dims, raw)
}

// The export's quantized arithmetic is the runtime's, operation for
// operation, so that onnxruntime computes the same bits:
//
//   - an activation's quantization is Mul by 1/scale, Round (ties to
//     even), Clip to the codes' range less the zero point, and Mul by the
//     scale — quantizer.Code and Apply's steps (QuantizeLinear divides by
//     the scale instead, which rounds differently near a code boundary);
//   - a layer the runtime runs on integer codes (the int8 kernel: its
//     weights and its input quantized) sums the input's codes times the
//     weight's exactly, then multiplies by s_x·s_w per output channel and
//     adds the bias — the int8 kernel's y = float(Σ)·s + b, rounded after
//     the product (integer).
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
// the int8 kernel and codes in 8 bits.
func (e *onnxExport) integerForm(l *Layer) bool {
	return !e.qdq && l.k8 != nil && l.wq != nil && l.wq.Bits <= 8
}

// sumsFitFloat says whether a float convolution (or GEMM) of layer l's
// input steps by its weight's sums exactly in any order: each row's
// Σ_k |w_k − z_w|·max|x − z_x| is below 2^24, so every partial sum is an
// integer a float32 holds.
func sumsFitFloat(l *Layer) bool {
	q := l.k8.in
	maxX := float64(max(q.Qmax-q.Zero, q.Zero-q.Qmin))
	for r := range l.Out {
		z := l.wq.Zero[0]
		if len(l.wq.Zero) > 1 {
			z = l.wq.Zero[r]
		}
		var sum float64
		for _, c := range l.wq.Codes[r*l.In : (r+1)*l.In] {
			sum += math.Abs(float64(c - z))
		}
		if sum*maxX >= 1<<24 {
			return false
		}
	}
	return true
}

// integer adds layer l on integer codes (integerForm): in, the value it
// reads; dims and src the weight's ONNX shape [out, …] and element order.
// It returns the output before the activation: s_x·s_w·Σ (x − z_x)(w − z_w)
// + b, the sum exact —
//
//   - where it fits a float (sumsFitFloat, nearly always): Conv or Gemm of
//     the input's steps by the weight's (DequantizeLinear of the codes at
//     scale 1: w − z_w), whose sums are then exact in any order, the
//     engines' fast float kernels; the scaling goes through a double
//     (float32 × float32 is exact there, and rounds once back to float32,
//     as the runtime's product does), which also keeps optimizers from
//     folding it into the weights;
//   - elsewhere: ConvInteger or MatMulInteger of the codes, summed in int32
//     (onnxruntime runs these slowly), one weight zero point for all rows.
func (e *onnxExport) integer(l *Layer, in *onnxValue, dims []int, src func(int) int) (string, bool, error) {
	g := e.g
	conv := graph.Kind(l.Kind) == graph.Conv
	sdims := []int{l.Out}
	if conv {
		sdims = []int{l.Out, 1, 1}
	}
	var sum string
	switch {
	case sumsFitFloat(l):
		w, typ, err := g.weightCodes(l, dims, src)
		if err != nil {
			return "", false, err
		}
		ones := make([]float32, len(l.wq.Scale))
		for i := range ones {
			ones[i] = 1
		}
		zero := g.init(l.Name+".weight_zero", typ, scaleDims(l.wq), ints(typ, l.wq.Zero))
		w = g.node("DequantizeLinear", l.Name+".weight_steps", []string{w, g.floats(l.Name+".weight_one", ones, scaleDims(l.wq)...), zero}, attrInt("axis", 0))
		x := e.steps(in, l.k8.in)
		if conv {
			sum = g.node("Conv", l.Name+".sum", []string{x, w}, append(window(l), attrInt("group", 1))...)
		} else {
			sum = g.node("Gemm", l.Name+".sum", []string{x, w}, attrInt("transB", 1))
		}
		sum = g.node("Cast", l.Name+".sum_d", []string{sum}, attrInt("to", onnxDouble))
		scale := make([]float64, l.Out)
		for i, v := range l.k8.scale[:l.Out] {
			scale[i] = float64(v)
		}
		sum = g.node("Mul", l.Name+".scaled_d", []string{sum, g.doubles(l.Name+".scale", scale, sdims...)})
		sum = g.node("Cast", l.Name+".scaled", []string{sum}, attrInt("to", onnxFloat))
	case slices.ContainsFunc(l.wq.Zero, func(z int32) bool { return z != l.wq.Zero[0] }):
		return "", false, nil // no integer form: the float one
	default:
		// MatMulInteger takes the weight [in, out].
		wdims, wsrc := dims, src
		if !conv {
			wdims, wsrc = []int{l.In, l.Out}, func(i int) int { return src(i%l.Out*l.In + i/l.Out) }
		}
		// Signed codes go as uint8, shifted by 128 with their zero point:
		// onnxruntime's uint8 × int8 kernel on CPUs without AVX-512 VNNI
		// adds pairs of products in int16 with saturation (VPMADDUBSW), so
		// its sums go wrong once |x·w + x′·w′| passes 32 767 (8-bit codes
		// of 255 and ±127 do); its uint8 × uint8 kernel does not saturate.
		w, typ, shift, err := g.weightCodesAs(l, wdims, wsrc, true)
		if err != nil {
			return "", false, err
		}
		if typ == onnxUint4 { // 4-bit codes widened for the integer operators
			typ, w = onnxUint8, g.node("Cast", l.Name+".weight_u8", []string{w}, attrInt("to", onnxUint8))
		}
		wzero := g.init(l.Name+".weight_zero", typ, nil, ints(typ, []int32{l.wq.Zero[0] + shift}))
		x, xzero := e.codes(in, l.k8)
		if conv {
			sum = g.node("ConvInteger", l.Name+".sum", []string{x, w, xzero, wzero}, window(l)...)
		} else {
			sum = g.node("MatMulInteger", l.Name+".sum", []string{x, w, xzero, wzero})
		}
		sum = g.node("Cast", l.Name+".sum_f", []string{sum}, attrInt("to", onnxFloat))
		sum = g.node("Mul", l.Name+".scaled", []string{sum, g.floats(l.Name+".scale", l.k8.scale[:l.Out], sdims...)})
	}
	e.info.Integer = append(e.info.Integer, l.Name)
	return g.node("Add", l.Name, []string{sum, g.floats(l.Name+".bias", l.b, sdims...)}), true, nil
}
