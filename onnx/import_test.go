package onnx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/internal/ort"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// The fixtures (testdata/make_fixtures.py, PyTorch): name, input shape
// [C, H, W] of the 4 inputs in NAME.x.f32.
var fixtures = []struct {
	name    string
	c, h, w int
	ids     bool // byte ids [batch, w], stored as id/255
}{
	{"conv_bn", 3, 16, 16, false},
	{"residual", 2, 8, 8, false},
	{"lenet_flatten", 1, 12, 12, false},
	{"view_flatten", 1, 6, 6, false},
	{"mnist_cnn", 1, 28, 28, false},
	{"normalized", 3, 8, 8, false},
	{"transformer", 1, 1, 16, true},
	{"charlm", 1, 1, 12, true},
	{"sigmoid_out", 1, 4, 4, false},
	{"silu", 2, 8, 8, false},
	{"softmax_out", 1, 4, 4, false},
	{"torch_encoder", 1, 1, 16, true},
	{"torch_lm", 1, 1, 12, true},
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, len(b)/4)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return x
}

// nhwc reorders images [n, c, h, w] to lathe's [n, h, w, c].
func nhwc(x []float32, n, c, h, w int) []float32 {
	out := make([]float32, len(x))
	for s := range n {
		for ch := range c {
			for p := range h * w {
				out[(s*h*w+p)*c+ch] = x[(s*c+ch)*h*w+p]
			}
		}
	}
	return out
}

// TestImportAgreesWithOnnxruntime imports each PyTorch-made fixture at
// opsets 13 and 17 and runs the model file in lathe's runtime and the
// original ONNX file in onnxruntime on the fixture's inputs: the same
// top-1 class and logits within 1e-4; lathe's ONNX export of the model
// file computes the runtime's logits in onnxruntime too.
func TestImportAgreesWithOnnxruntime(t *testing.T) {
	for _, fx := range fixtures {
		x := readF32(t, filepath.Join("testdata", fx.name+".x.f32"))
		n := len(x) / (fx.c * fx.h * fx.w)
		for _, opset := range []string{"13", "17"} {
			path := filepath.Join("testdata", fx.name+".op"+opset+".onnx")
			t.Run(fx.name+"/opset"+opset, func(t *testing.T) {
				m, err := ReadFile(path, Options{})
				if err != nil {
					t.Fatal(err)
				}
				rt, err := infer.Load(m.File, cpu.New(cpu.Options{Threads: 1}))
				if err != nil {
					t.Fatal(err)
				}
				in, extra := nhwc(x, n, fx.c, fx.h, fx.w), []string(nil)
				if fx.ids {
					in, extra = x, []string{"ids"}
				}
				got, err := rt.Forward(in, n)
				if err != nil {
					t.Fatal(err)
				}
				want := ort.Run(t, path, x, n, fx.c, fx.h, fx.w, extra...)
				if len(got) != len(want) {
					t.Fatalf("lathe gives %d logits, onnxruntime %d", len(got), len(want))
				}
				k := m.Net.Classes // per sample, or per position of a language model
				worst := 0.0
				for s := range len(want) / k {
					if argmax(got[s*k:(s+1)*k]) != argmax(want[s*k:(s+1)*k]) {
						t.Errorf("sample %d: top-1 %d, onnxruntime %d", s, argmax(got[s*k:(s+1)*k]), argmax(want[s*k:(s+1)*k]))
					}
				}
				for j := range got {
					worst = max(worst, math.Abs(float64(got[j]-want[j])))
				}
				t.Logf("%d layers, opset %d, producer %q: max |Δlogit| %.2g", len(m.Net.Layers), m.Opset, m.Producer, worst)
				if worst > 1e-4 {
					t.Errorf("logits differ by up to %g", worst)
				}
				exportAgrees(t, m.File, x, n, fx.c, fx.h, fx.w, got, 1e-4, extra...) // and lathe's export of it
			})
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

// TestImportMakesLatheLayers: the residual fixture becomes convolutions
// with their batch norms, the activations joined to them, a residual
// addition and a global pooling — lathe's own kinds, named after the
// PyTorch modules.
func TestImportMakesLatheLayers(t *testing.T) {
	m, err := ReadFile("testdata/residual.op17.onnx", Options{Dataset: "mnist", Job: "res"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]graph.Kind{}
	for _, l := range m.Net.Layers {
		kinds[l.Name] = l.Kind
	}
	for name, want := range map[string]graph.Kind{"stem": graph.Conv, "bs": graph.BatchNorm, "dw": graph.Conv, "sc": graph.Conv, "fc": graph.Linear, "add1": graph.Add, "pool1": graph.GlobalAvgPool} {
		if kinds[name] != want {
			t.Errorf("layer %s is %q, want %q (layers %v)", name, kinds[name], want, kinds)
		}
	}
	if l := m.Net.Layer("bs"); l == nil || l.Act != graph.ReLU {
		t.Errorf("the stem's ReLU did not join its batch norm: %+v", l)
	}
	if l := m.Net.Layer("dw"); l == nil || l.Groups != 8 || l.Stride != 2 || l.Pad != 1 || !l.NoBias {
		t.Errorf("depthwise convolution: %+v", l)
	}
	if l := m.Net.Layer("add1"); l == nil || l.Act != graph.ReLU || len(l.Inputs) != 2 {
		t.Errorf("residual addition: %+v", l)
	}
	if m.File.Job != "res" || m.File.Tensor("bs.running_var") == nil {
		t.Errorf("model file: job %q, tensors %d", m.File.Job, len(m.File.Tensors))
	}
}

// TestImportNormalizes: an input normalization stated at import (the
// model's training normalized outside the graph) is kept in the model
// file: lathe's runtime on raw inputs agrees with onnxruntime on inputs
// normalized by hand; the normalization inside the graph is imported as
// the same thing.
func TestImportNormalizes(t *testing.T) {
	mean, std := []float32{0.5, 0.4, 0.3}, []float32{0.25, 0.2, 0.3}
	m, err := ReadFile("testdata/conv_bn.op17.onnx", Options{Mean: mean, Std: std})
	if err != nil {
		t.Fatal(err)
	}
	x := readF32(t, "testdata/conv_bn.x.f32")
	n := len(x) / (3 * 16 * 16)
	normed := make([]float32, len(x))
	for i, v := range x { // NCHW: channel (i / 256) % 3
		c := (i / 256) % 3
		normed[i] = (v - mean[c]) / std[c]
	}
	rt, err := infer.Load(m.File, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := rt.Forward(nhwc(x, n, 3, 16, 16), n)
	if err != nil {
		t.Fatal(err)
	}
	want := ort.Run(t, "testdata/conv_bn.op17.onnx", normed, n, 3, 16, 16)
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-4 {
			t.Fatalf("logit %d: %g, onnxruntime on normalized inputs %g", i, got[i], want[i])
		}
	}
	in, err := ReadFile("testdata/normalized.op17.onnx", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if z := in.Net.Normalize; z == nil || math.Abs(float64(z.Mean[0])-0.485) > 1e-6 || math.Abs(float64(z.Std[2])-0.225) > 1e-6 {
		t.Errorf("the graph's own normalization: %+v", z)
	}
	if _, err := ReadFile("testdata/conv_bn.op17.onnx", Options{Mean: []float32{1, 2}}); err == nil || !strings.Contains(err.Error(), "2 means") {
		t.Errorf("two means for three channels: %v", err)
	}
}

// TestImportMakesTransformers: the PyTorch transformer's attention
// pattern becomes lathe's attention layers (named after the modules that
// hold q, k, v, o; causal in the language model), its feed-forward layers
// 1×1 convolutions with GELU, its embedding one layer with its positions,
// and the language model scores every position.
func TestImportMakesTransformers(t *testing.T) {
	for _, c := range []struct {
		file           string
		heads, norms   int
		causal, perPos bool
		attn, fc1      string
		act            graph.Activation
	}{
		{"transformer.op13.onnx", 4, 5, false, false, "blocks.0", "blocks.0.fc1", graph.GELU},
		{"transformer.op17.onnx", 4, 5, false, false, "blocks.0", "blocks.0.fc1", graph.GELU},
		{"charlm.op17.onnx", 2, 3, true, true, "blocks.0", "blocks.0.fc1", graph.GELU},
		// nn.TransformerEncoderLayer's own export (nn.MultiheadAttention's
		// packed, time-major form): pre-norm batch-first, and post-norm
		// time-major with a causal mask.
		{"torch_encoder.op13.onnx", 4, 5, false, false, "enc.layers.1.self_attn", "enc.layers.1.linear1", graph.GELU},
		{"torch_encoder.op17.onnx", 4, 5, false, false, "enc.layers.0.self_attn", "enc.layers.0.linear1", graph.GELU},
		{"torch_lm.op17.onnx", 2, 2, true, true, "enc.layers.0.self_attn", "enc.layers.0.linear1", graph.ReLU},
	} {
		m, err := ReadFile(filepath.Join("testdata", c.file), Options{})
		if err != nil {
			t.Fatal(err)
		}
		attn, fc1, emb, norms := m.Net.Layer(c.attn), m.Net.Layer(c.fc1), m.Net.Layer("tok"), 0
		for _, l := range m.Net.Layers {
			if l.Kind == graph.LayerNorm {
				norms++
			}
		}
		switch {
		case attn == nil || attn.Kind != graph.Attention || attn.Heads != c.heads || attn.Causal != c.causal:
			t.Errorf("%s: attention %+v", c.file, attn)
		case fc1 == nil || fc1.Kind != graph.Conv || fc1.Kernel != 1 || fc1.Act != c.act:
			t.Errorf("%s: feed-forward layer %+v", c.file, fc1)
		case emb == nil || emb.Kind != graph.Embedding || m.Net.PerPosition != c.perPos:
			t.Errorf("%s: embedding %+v, per position %v", c.file, emb, m.Net.PerPosition)
		case norms != c.norms:
			t.Errorf("%s: %d layer norms", c.file, norms)
		}
	}
}

// TestImportRefusesWhatLatheCannotExpress: an operator lathe has no kind
// for and an attribute it cannot honour are refused naming the node.
func TestImportRefusesWhatLatheCannotExpress(t *testing.T) {
	for file, want := range map[string][]string{
		"bad_dilation.op13.onnx": {"/c/Conv", "Conv", "dilations [2 2]"},
		"bad_tanh.op17.onnx":     {"/Tanh", "Tanh", "cannot express operator Tanh"},
		"bad_slice.op17.onnx":    {"/Slice", "Slice", "slices only a linear layer's outputs"},
	} {
		_, err := ReadFile(filepath.Join("testdata", file), Options{})
		var ne *NodeError
		if !errors.As(err, &ne) {
			t.Errorf("%s: %v, want a NodeError", file, err)
			continue
		}
		if ne.Node != want[0] || ne.Op != want[1] || !strings.Contains(err.Error(), want[2]) || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: %v (node %q, op %q), want node %q, op %q, %q", file, err, ne.Node, ne.Op, want[0], want[1], want[2])
		}
	}
	if _, err := Import([]byte("not a model"), Options{}); err == nil {
		t.Error("garbage imported")
	}
	// A whole-graph mistake names the output: a time-major model whose
	// head reads [T, batch, D].
	if _, err := ReadFile(filepath.Join("testdata", "bad_time_major.op17.onnx"), Options{}); err == nil || !strings.Contains(err.Error(), `output "logits" is time-major`) {
		t.Errorf("a time-major output: %v", err)
	}
}

// TestNormalizedTrainingGraph: the training graph (what a fine-tune
// starts from) computes an imported input normalization as the runtime
// does: the same classes and confidences on the fixture's inputs.
func TestNormalizedTrainingGraph(t *testing.T) {
	m, err := ReadFile("testdata/normalized.op17.onnx", Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := readF32(t, "testdata/normalized.x.f32")
	n := len(x) / (3 * 8 * 8)
	in := nhwc(x, n, 3, 8, 8)
	eng := cpu.New(cpu.Options{Threads: 1})
	rt, err := infer.Load(m.File, eng)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := rt.Forward(in, n)
	if err != nil {
		t.Fatal(err)
	}
	// Its export normalizes too (Sub, Div at the input): onnxruntime on the
	// raw inputs agrees.
	exportAgrees(t, m.File, x, n, 3, 8, 8, logits, 1e-4)
	gm, _, err := rundir.LoadModel(m.File)
	if err != nil {
		t.Fatal(err)
	}
	set := &data.Set{Name: "fixture/test", Rows: 8, Cols: 8, Channels: 3, Classes: 4, Floats: in, Labels: make([]byte, n)}
	preds, err := trainer.PredictModel(gm, eng, set, n)
	if err != nil {
		t.Fatal(err)
	}
	for s := range n {
		row := logits[s*4 : (s+1)*4]
		best := argmax(row)
		sum := 0.0
		for _, v := range row {
			sum += math.Exp(float64(v - row[best]))
		}
		if preds.Class[s] != best || math.Abs(preds.Confidence[s]-1/sum) > 1e-4 {
			t.Errorf("sample %d: training graph class %d (%.5f), runtime %d (%.5f)", s, preds.Class[s], preds.Confidence[s], best, 1/sum)
		}
	}
}

// TestSoftmaxOutput: a model ending in a softmax over the classes imports
// with its scores as the last layer and Network.Softmax set: the runtime
// gives the probabilities (rows summing to 1, as onnxruntime on the file:
// TestImportAgreesWithOnnxruntime), the training graph the scores, and
// lathe's export ends in the Softmax again.
func TestSoftmaxOutput(t *testing.T) {
	m, err := ReadFile("testdata/softmax_out.op17.onnx", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Net.Softmax || m.Net.Layers[len(m.Net.Layers)-1].Kind != graph.Linear {
		t.Fatalf("softmax %v, last layer %+v", m.Net.Softmax, m.Net.Layers[len(m.Net.Layers)-1])
	}
	x := readF32(t, "testdata/softmax_out.x.f32")
	n := len(x) / 16
	rt, err := infer.Load(m.File, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	probs, err := rt.Forward(x, n)
	if err != nil {
		t.Fatal(err)
	}
	probs = slices.Clone(probs)
	for s := range n {
		var sum float64
		for _, p := range probs[s*4 : (s+1)*4] {
			sum += float64(p)
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("sample %d: probabilities summing to %g", s, sum)
		}
	}
	exportAgrees(t, m.File, x, n, 1, 4, 4, probs, 1e-6)
	gm, _, err := rundir.LoadModel(m.File)
	if err != nil {
		t.Fatal(err)
	}
	set := &data.Set{Name: "fixture/test", Rows: 4, Cols: 4, Channels: 1, Classes: 4, Floats: x, Labels: make([]byte, n)}
	preds, err := trainer.PredictModel(gm, cpu.New(cpu.Options{Threads: 1}), set, n)
	if err != nil {
		t.Fatal(err)
	}
	for s := range n {
		if preds.Class[s] != argmax(probs[s*4:(s+1)*4]) {
			t.Errorf("sample %d: the training graph's class %d, the runtime's %d", s, preds.Class[s], argmax(probs[s*4:(s+1)*4]))
		}
	}
}

// exportAgrees exports f to ONNX and runs it in onnxruntime on x (n
// samples c×h×w, channels first): every output within tol of want, the
// runtime's.
func exportAgrees(t *testing.T, f *checkpoint.File, x []float32, n, c, h, w int, want []float32, tol float64, extra ...string) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := infer.ExportONNX(f, &buf, infer.ONNXOptions{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "again.onnx")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, v := range ort.Run(t, path, x, n, c, h, w, extra...) {
		if math.Abs(float64(v-want[i])) > tol {
			t.Fatalf("export: output %d is %g, the runtime's %g", i, v, want[i])
		}
	}
}
