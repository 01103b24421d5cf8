package ptq

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/rundir"
)

// resnet8 is the PyTorch-trained ResNet-8 of onnx/testdata (Fashion-MNIST).
func resnet8(t *testing.T) (*checkpoint.File, []float32, *data.Set) {
	t.Helper()
	f, err := onnx.ReadModel("../onnx/testdata/fashion_resnet8.onnx", "fashion-mnist")
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := data.Load("fashion-mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	return f, Calibration(train, 64, 1), test.Slice("fashion-mnist/test", 0, 2000)
}

func accuracy(t *testing.T, f *checkpoint.File, set *data.Set) float64 {
	t.Helper()
	rt, err := infer.Load(f, cpu.New(cpu.Options{Threads: 2}))
	if err != nil {
		t.Fatal(err)
	}
	acc, err := infer.Accuracy(rt, set, 500)
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

// TestW8A8: 8-bit weights and activations, batch norms folded first,
// keep the accuracy within a point, and the file holds integer weights
// and frozen activation ranges.
func TestW8A8(t *testing.T) {
	f, x, test := resnet8(t)
	out, rep, err := Compress(f, x, cpu.New(cpu.Options{Threads: 2}), Options{Bits: 8, Activations: 8, Range: "percentile", BiasCorrection: true})
	if err != nil {
		t.Fatal(err)
	}
	base, got := accuracy(t, f, test), accuracy(t, out, test)
	t.Logf("fp32 %.4f, W8A8 %.4f; %d batch norms folded, %d activation ranges", base, got, rep.Folded, len(rep.Activation))
	if math.Abs(got-base) > 0.01 || rep.Folded != 9 || len(rep.Activation) < 9 {
		t.Errorf("W8A8: %.4f vs fp32 %.4f, %d folded, %d ranges", got, base, rep.Folded, len(rep.Activation))
	}
	if w := out.Tensor("blocks.0.c1"); w == nil || w.Quant == nil || w.Quant.Bits != 8 {
		t.Errorf("blocks.0.c1 is not stored as 8-bit codes: %+v", w)
	}
}

// TestW8A8Normalized: where the network normalizes its input first, the
// stem's input is not pixel/255's codes, so the runtime runs it in float
// (no int8 kernel reading the normalized values as pixel codes), and W8A8
// keeps the normalized network's accuracy within a point. The network is
// the ResNet-8 reading x/0.5 with its stem's weights halved: the same
// function, on inputs up to 2.
func TestW8A8Normalized(t *testing.T) {
	f, err := onnx.ReadFile("../onnx/testdata/fashion_resnet8.onnx", onnx.Options{Dataset: "fashion-mnist", Mean: []float32{0}, Std: []float32{0.5}})
	if err != nil {
		t.Fatal(err)
	}
	stem := f.File.Tensor(f.Net.Layers[0].Name)
	for i := range stem.Data {
		stem.Data[i] *= 0.5
	}
	_, x, test := resnet8(t)
	out, _, err := Compress(f.File, x, cpu.New(cpu.Options{Threads: 2}), Options{Bits: 8, Activations: 8})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := infer.Load(out, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if stem := rt.Layers[0]; slices.Contains(stem.Candidates(), infer.Int8) {
		t.Errorf("the stem %s reads normalized values as pixel codes", stem.Name)
	}
	base, got := accuracy(t, f.File, test), accuracy(t, out, test)
	t.Logf("normalized: fp32 %.4f, W8A8 %.4f", base, got)
	if math.Abs(got-base) > 0.01 {
		t.Errorf("W8A8 %.4f vs fp32 %.4f", got, base)
	}
}

// TestGPTQAndSparseGPTOnANetwork: layer by layer on a trained network,
// GPTQ's calibration output error is at most round-to-nearest's and
// SparseGPT's below magnitude pruning's, each weight at the asked
// sparsity.
func TestGPTQAndSparseGPTOnANetwork(t *testing.T) {
	f, x, _ := resnet8(t)
	eng := cpu.New(cpu.Options{Threads: 2})
	for _, o := range []Options{{Bits: 3, GPTQ: true}, {Prune: "sparsegpt", Sparsity: 0.5}} {
		_, rep, err := Compress(f, x, eng, o)
		if err != nil {
			t.Fatal(err)
		}
		var e, b float64
		for _, l := range rep.Layers {
			e, b = e+l.Error, b+l.Baseline
			if l.Error > l.Baseline*1.0001 {
				t.Errorf("%+v: layer %s: error %g above the plain method's %g", o, l.Layer, l.Error, l.Baseline)
			}
			if o.Prune != "" && math.Abs(l.Sparsity-0.5) > 0.02 {
				t.Errorf("layer %s: sparsity %g", l.Layer, l.Sparsity)
			}
		}
		t.Logf("%+v: summed output error %.4g, plain method's %.4g", o, e, b)
	}
	if _, _, err := Compress(f, x, eng, Options{GPTQ: true}); err == nil {
		t.Error("GPTQ without bits accepted")
	}
}

// TestRanges: a percentile range leaves out the rare outliers a min–max
// range spans, and the MSE range clips a long tail shorter than min–max.
func TestRanges(t *testing.T) {
	v := make([]float32, 100000)
	for i := range v {
		v[i] = float32(i%1000) / 1000 // 0 … 0.999
	}
	v[7] = 50 // one outlier
	if p := percentile(v, 99.99); p > 1 {
		t.Errorf("99.99th percentile %g spans the outlier", p)
	}
	lo, hi := mseRange(model.QuantSpec{Bits: 8}, v, 0, 50)
	if lo != 0 || hi >= 50 || hi < 1 {
		t.Errorf("MSE range [%g, %g] of values in [0, 1) and one at 50", lo, hi)
	}
}

// TestDepthwise: a MobileNet's depthwise convolutions (a Hessian per
// group of one channel) and 1×1 convolutions compress by GPTQ, each
// layer's error at most round-to-nearest's (the groups' code is
// SparseGPT's too).
func TestDepthwise(t *testing.T) {
	m, err := model.New(model.Spec{Arch: "mobilenet", Width: 0.25}, model.MNISTInput, 1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := rundir.ExportModel(m, "mobilenet", "mnist", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	train, _, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	x := Calibration(train, 8, 1)
	for _, o := range []Options{{Bits: 4, GPTQ: true}} {
		_, rep, err := Compress(f, x, cpu.New(cpu.Options{Threads: 2}), o)
		if err != nil {
			t.Fatal(err)
		}
		grouped := 0
		for _, l := range rep.Layers {
			if ml := m.Net.Layer(l.Layer); ml != nil && ml.GroupCount() > 1 {
				grouped++
			}
			if l.Error > l.Baseline*1.0001+1e-12 {
				t.Errorf("%+v: layer %s: error %g above the plain method's %g", o, l.Layer, l.Error, l.Baseline)
			}
		}
		if grouped == 0 {
			t.Errorf("no depthwise layer among %d", len(rep.Layers))
		}
	}
}

// TestNgramTransformer: a transformer with an ngram convolution over its
// sequence (which the runtime runs on its middle kernel row only)
// compresses by GPTQ with the file's K·K columns — each layer's error at
// most round-to-nearest's — and the result loads and runs.
func TestNgramTransformer(t *testing.T) {
	net, err := graph.Transformer(graph.Shape{H: 1, W: 16, C: 1}, graph.TransformerShape{Dim: 32, Heads: 4, Blocks: 1, MLP: 48, Ngram: 3}, 5, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromNetwork(net, "uniform", 4)
	if err != nil {
		t.Fatal(err)
	}
	f, err := rundir.ExportModel(m, "seq", "langid", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(4, 4))
	x := make([]float32, 256*16)
	for i := range x {
		x[i] = float32(r.IntN(256)) / 255
	}
	eng := cpu.New(cpu.Options{Threads: 2})
	out, rep, err := Compress(f, x, eng, Options{Bits: 4, GPTQ: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rep.Layers, func(l LayerReport) bool { return l.Layer == "ngram" }) {
		t.Fatalf("the ngram convolution not compressed: %+v", rep.Layers)
	}
	for _, l := range rep.Layers {
		if l.Error > l.Baseline*1.0001+1e-12 {
			t.Errorf("layer %s: error %g above the plain method's %g", l.Layer, l.Error, l.Baseline)
		}
	}
	if w := out.Tensor("ngram"); w == nil || w.Quant == nil || len(w.Quant.Codes) != 32*3*3*32 {
		t.Fatalf("ngram's weight in the compressed file: %+v", w)
	}
	rt, err := infer.Load(out, eng)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Forward(x[:16*8], 8); err != nil {
		t.Fatal(err)
	}
}
