package infer

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/internal/onnxpb"
	"github.com/lathe-ml/lathe/internal/ort"
	"github.com/lathe-ml/lathe/model"
	"google.golang.org/protobuf/proto"
)

// exportAndCompare exports f to ONNX with each of opts (wanting the given
// opsets), runs the first n MNIST test images through onnxruntime and
// through the runtime, and requires identical top-1 answers on ≥ 99.9 %
// of them and logits within 1e-3.
func exportAndCompare(t *testing.T, f *checkpoint.File, n int, opts []ONNXOptions, opsets []int) {
	t.Helper()
	m, err := Load(f, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, n*test.Features())
	labels := make([]float32, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	(&data.Batcher{Set: test}).Fill(x, labels, idx, 0)
	want, err := m.Forward(x, n)
	if err != nil {
		t.Fatal(err)
	}
	for i, opt := range opts {
		var buf bytes.Buffer
		info, err := ExportONNX(f, &buf, opt)
		if err != nil {
			t.Fatal(err)
		}
		if info.Opset != opsets[i] {
			t.Errorf("opset %d, want %d", info.Opset, opsets[i])
		}
		path := filepath.Join(t.TempDir(), "model.onnx")
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		// One channel: NHWC and NCHW are the same bytes.
		got := ort.Run(t, path, x, n, m.Channels, m.Rows, m.Cols)
		if len(got) != len(want) {
			t.Fatalf("onnxruntime gave %d logits, the runtime %d", len(got), len(want))
		}
		same, worst, largest := 0, 0.0, 0.0
		for s := 0; s < n; s++ {
			g, w := got[s*m.Classes:(s+1)*m.Classes], want[s*m.Classes:(s+1)*m.Classes]
			if argmax(g) == argmax(w) {
				same++
			}
			for j := range g {
				worst = max(worst, math.Abs(float64(g[j]-w[j])))
				largest = max(largest, math.Abs(float64(w[j])))
			}
		}
		t.Logf("opset %d, %d bytes, %d nodes, quantized weights %v, activations %v, integer layers %v: top-1 identical on %d/%d, max |Δlogit| %.3g",
			info.Opset, info.Bytes, info.Nodes, info.WeightBits, info.ActQuant, info.Integer, same, n, worst)
		if opt.QDQ != (len(info.Integer) == 0) && len(info.ActQuant) > 0 {
			t.Errorf("QDQ %v: layers on integer codes %v", opt.QDQ, info.Integer)
		}
		if float64(same) < 0.999*float64(n) {
			t.Errorf("top-1 identical on %d of %d images", same, n)
		}
		// The export computes quantized layers as the runtime does, so
		// logits agree to float rounding. Q/DQ pairs instead: where
		// onnxruntime's float convolution and lathe's exact integer sum
		// put a value on either side of a rounding boundary, it takes the
		// neighbouring code, and deep networks then differ by a few
		// quanta, bounded at 1 % of the largest logit.
		tol := 1e-3
		if opt.QDQ && len(info.ActQuant) > 0 {
			tol = max(tol, 0.01*largest)
		}
		if worst > tol {
			t.Errorf("logits differ by up to %g (bound %g)", worst, tol)
		}
	}
}

func argmax(v []float32) int {
	best := 0
	for j, x := range v {
		if x > v[best] {
			best = j
		}
	}
	return best
}

// TestONNXAgreesWithTheRuntime exports a real pruned model with 4-bit
// weights and 8-bit activations — as INT4 (opset 21) and widened to INT8
// (opset 17) — and runs both in onnxruntime on MNIST test images.
func TestONNXAgreesWithTheRuntime(t *testing.T) {
	f, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	exportAndCompare(t, f, 2000, []ONNXOptions{{}, {Int8: true}, {QDQ: true}}, []int{21, 17, 21})
}

// TestONNXIntegerSums: where a layer's sums could outgrow a float's
// integers (8-bit codes of ±127 over 784 inputs), the export sums its
// codes in int32 (MatMulInteger) instead of a float GEMM — and agrees as
// closely; the same layer with small codes takes the float GEMM.
func TestONNXIntegerSums(t *testing.T) {
	f, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	w := f.Tensor("fc1")
	q := w.Quant
	q.Bits, q.QMin = 8, -127
	for i := range q.Codes {
		q.Codes[i] = 127 * int32(1-2*((i*7+i/784)%3%2)) // ±127, no sum cancelling out
	}
	for i := range q.Scale {
		q.Scale[i] = 1e-4
	}
	for i, c := range q.Codes {
		w.Data[i] = float32(c) * q.Scale[min(i/784, len(q.Scale)-1)]
	}
	m, err := Load(f, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if sumsFitFloat(m.Layers[0]) || !sumsFitFloat(m.Layers[1]) {
		t.Fatalf("fc1 (784 × ±127 × 255) and fc2 (16 small codes): sums fit a float %v, %v", sumsFitFloat(m.Layers[0]), sumsFitFloat(m.Layers[1]))
	}
	var buf bytes.Buffer
	if _, err := ExportONNX(f, &buf, ONNXOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("MatMulInteger")) || !bytes.Contains(buf.Bytes(), []byte("fc2.weight_steps")) {
		t.Fatal("fc1 is not summed in int32, or fc2 not as float steps")
	}
	// The signed codes go as uint8 (onnxruntime's uint8 × int8 kernel
	// saturates pairs of products on CPUs without AVX-512 VNNI).
	var mp onnxpb.ModelProto
	if err := proto.Unmarshal(buf.Bytes(), &mp); err != nil {
		t.Fatal(err)
	}
	for _, init := range mp.GetGraph().GetInitializer() {
		if n := init.GetName(); (n == "fc1.weight_q" || n == "fc1.weight_zero") && init.GetDataType() != int32(onnxpb.TensorProto_UINT8) {
			t.Fatalf("%s is of ONNX type %d, not uint8", n, init.GetDataType())
		}
	}
	exportAndCompare(t, f, 500, []ONNXOptions{{}}, []int{21})
}

// TestONNXLeNet5 exports a LeNet-5 with convolutions, pooling, weights
// quantized per channel at 8 (asymmetric), 4 and 3 bits (symmetric) and
// quantized activations, so the filters' layout, the NHWC flattening and
// every integer type are checked against onnxruntime.
func TestONNXLeNet5(t *testing.T) {
	gm, err := model.New(model.Spec{Arch: "lenet5"}, model.MNISTInput, 5)
	if err != nil {
		t.Fatal(err)
	}
	gm.Quant = map[string]*model.QuantControl{
		"conv1": {Spec: model.QuantSpec{Bits: 8, PerChannel: true}, Enabled: true},
		"conv2": {Spec: model.QuantSpec{Bits: 4, Symmetric: true, PerChannel: true}, Enabled: true},
		"fc1":   {Spec: model.QuantSpec{Bits: 3, Symmetric: true}, Enabled: true},
	}
	gm.ActQuant = map[string]*model.Observer{
		"conv1": {Spec: model.QuantSpec{Bits: 8}, Min: 0, Max: 1.5, Enabled: true},
		"conv2": {Spec: model.QuantSpec{Bits: 6, Symmetric: true}, Min: 0, Max: 3, Enabled: true},
	}
	exportAndCompare(t, modelFile(t, gm, "lenet5"), 1000, []ONNXOptions{{}, {Int8: true}}, []int{21, 17})
}

// TestONNXRefusesWhatItCannotExpress: a model without layers, a training
// checkpoint and weights whose codes fit no 8-bit type are refused with
// an error naming the layer.
func TestONNXRefusesWhatItCannotExpress(t *testing.T) {
	f, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	f.Tensor("fc2").Quant.QMin = 200 // codes 200..215: no 8-bit type holds them
	var buf bytes.Buffer
	if _, err := ExportONNX(f, &buf, ONNXOptions{}); err == nil || !strings.Contains(err.Error(), "layer fc2") {
		t.Fatalf("codes outside 8 bits: %v", err)
	}
	tr, err := checkpoint.Read("../checkpoint/testdata/training.arrow")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ExportONNX(tr, &buf, ONNXOptions{}); err == nil || !strings.Contains(err.Error(), "not a model file") {
		t.Fatalf("a training checkpoint: %v", err)
	}
	if buf.Len() != 0 {
		t.Errorf("%d bytes written for models that were refused", buf.Len())
	}
}
