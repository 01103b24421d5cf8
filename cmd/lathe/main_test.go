package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/profile"
	"github.com/lathe-ml/lathe/rundir"
)

func runLathe(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = realMain(args, &o, &e)
	return code, o.String(), e.String()
}

const seedModel = "../../checkpoint/testdata/model.arrow"
const seedTraining = "../../checkpoint/testdata/training.arrow"

func TestInspect(t *testing.T) {
	for _, args := range [][]string{{"inspect", seedModel, "--json"}, {"inspect", "--json", seedModel}} {
		code, out, errOut := runLathe(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		var in checkpoint.Inspection
		if err := json.Unmarshal([]byte(out), &in); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(seedModel)
		params := 784*16 + 16 + 16*10 + 10
		if in.Kind != "model" || in.FileBytes != int(st.Size()) || in.DenseBytes != 4*params || in.Ratio <= 1 || len(in.WeightsSHA256) != 64 {
			t.Fatalf("%+v", in)
		}
		if fc1 := in.Tensors[0]; fc1.Name != "fc1" || fc1.Encoding != "sparse+quant" || fc1.Bits != 4 || fc1.Sparsity < 0.79 {
			t.Fatalf("fc1 %+v", fc1)
		}
	}
	// The table, and a training checkpoint: its latent weights differ from
	// the model file's quantized ones, so their digests differ.
	code, out, _ := runLathe(t, "inspect", seedTraining)
	if code != 0 || !strings.Contains(out, "mask/fc1") || !strings.Contains(out, "weights_sha256") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	_, a, _ := runLathe(t, "inspect", seedModel, "--json")
	_, b, _ := runLathe(t, "inspect", seedTraining, "--json")
	var ia, ib checkpoint.Inspection
	json.Unmarshal([]byte(a), &ia)
	json.Unmarshal([]byte(b), &ib)
	if ia.WeightsSHA256 == ib.WeightsSHA256 {
		t.Fatal("quantized and latent weights share a digest")
	}
}

func TestEval(t *testing.T) {
	code, out, errOut := runLathe(t, "eval", "--json", seedModel, "--dataset", "mnist")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var ev Evaluation
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatal(err)
	}
	// A 16-unit MLP trained on 5 000 images for two epochs, 80 % pruned
	// and at 4 bits: well above chance.
	if ev.Samples != 10000 || ev.TestAccuracy < 0.3 || ev.TestAccuracy > 1 || ev.Params != 784*16+16+16*10+10 || ev.Nonzero >= ev.Params/4 {
		t.Fatalf("%+v", ev)
	}
	// Each digit's recall, and their mean as the macro accuracy.
	var mean float64
	for _, r := range ev.PerClassRecall {
		if r < 0 || r > 1 {
			t.Fatalf("recalls %v", ev.PerClassRecall)
		}
		mean += r
	}
	if mean /= 10; len(ev.PerClassRecall) != 10 || math.Abs(ev.MacroAccuracy-mean) > 1e-12 || ev.MacroAccuracy < 0.3 {
		t.Fatalf("macro accuracy %v of recalls %v", ev.MacroAccuracy, ev.PerClassRecall)
	}
	// The training graph agrees, and reports the loss.
	code, out, errOut = runLathe(t, "eval", "--json", seedModel, "--dataset", "mnist", "--runtime", "graph")
	var gev Evaluation
	if err := json.Unmarshal([]byte(out), &gev); code != 0 || err != nil {
		t.Fatalf("graph runtime: exit %d: %v %s", code, err, errOut)
	}
	if d := gev.TestAccuracy - ev.TestAccuracy; d > 0.005 || d < -0.005 || gev.TestLoss <= 0 || len(gev.PerClassRecall) != 10 {
		t.Fatalf("graph runtime %+v, infer runtime accuracy %v", gev, ev.TestAccuracy)
	}
	if code, _, errOut := runLathe(t, "eval", seedTraining); code != 1 || !strings.Contains(errOut, "not a model file") {
		t.Fatalf("eval of a training checkpoint: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runLathe(t, "eval", seedModel, "--dataset", "cifar"); code != 1 || !strings.Contains(errOut, "cifar") {
		t.Fatalf("unknown dataset: exit %d: %s", code, errOut)
	}
}

func TestBadFilesAndUsage(t *testing.T) {
	b, err := os.ReadFile(seedModel)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "cut.arrow")
	os.WriteFile(bad, b[:len(b)/2], 0o644)
	if code, _, errOut := runLathe(t, "inspect", bad); code != 1 || !strings.Contains(errOut, bad) || !strings.Contains(errOut, "truncated") {
		t.Fatalf("truncated: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{{}, {"frob"}, {"inspect"}, {"inspect", "a", "b"}, {"eval", "--nope", seedModel}} {
		if code, _, _ := runLathe(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestLint(t *testing.T) {
	code, out, errOut := runLathe(t, "lint", "../../recipes/mnist-lenet300-kd-prune-qat.hcl", "-var", "epochs=10")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "valid") || !strings.Contains(out, "weight bits") || !strings.Contains(out, "92.00%") {
		t.Fatalf("lint output:\n%s", out)
	}
	r := filepath.Join(t.TempDir(), "r.hcl")
	os.WriteFile(r, []byte("job \"x\" {\n  epochs = -1\n}\n"), 0o644)
	if code, _, errOut := runLathe(t, "lint", r); code != 1 || !strings.Contains(errOut, r+":2,") {
		t.Fatalf("bad recipe: exit %d: %s", code, errOut)
	}
}

func TestBenchAndInferRuntime(t *testing.T) {
	code, out, errOut := runLathe(t, "bench", seedModel, "--json", "--batch", "1,32", "--seconds", "0.05")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var b Bench
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Results) != 2 || b.Results[0].Batch != 1 || b.Results[1].Batch != 32 || b.Results[0].P50us <= 0 ||
		b.Results[0].P99us < b.Results[0].P50us || b.Results[1].SamplesPerSecond <= 0 || len(b.Layers) != 2 || b.Layers[0].Nonzero == 0 {
		t.Fatalf("%+v", b)
	}
	if code, _, errOut := runLathe(t, "bench", seedModel, "--batch", "0"); code != 1 || !strings.Contains(errOut, `"0" is not a batch size in [1, 65536]`) {
		t.Fatalf("batch 0: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runLathe(t, "bench", seedModel, "--batch", "100000000"); code != 1 || !strings.Contains(errOut, `"100000000" is not a batch size`) {
		t.Fatalf("batch 10^8: exit %d: %s", code, errOut)
	}
	// The runtime (eval's default) agrees with the training graph.
	var g, r Evaluation
	_, a, _ := runLathe(t, "eval", seedModel, "--json", "--runtime", "graph")
	_, c, _ := runLathe(t, "eval", seedModel, "--json")
	json.Unmarshal([]byte(a), &g)
	json.Unmarshal([]byte(c), &r)
	if r.Runtime != "infer" || g.Runtime != "graph" || r.TestLoss != -1 || r.TestAccuracy < g.TestAccuracy-0.001 || r.TestAccuracy > g.TestAccuracy+0.001 {
		t.Fatalf("graph %+v, runtime %+v", g, r)
	}
}

// TestExport writes an ONNX file, and refuses a training checkpoint
// without touching a file already at the output path.
func TestExport(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.onnx")
	code, stdout, errOut := runLathe(t, "export", seedModel, "--onnx", out)
	if code != 0 || !strings.Contains(stdout, "opset 21") || !strings.Contains(stdout, "fc1 4-bit") {
		t.Fatalf("exit %d: %s%s", code, stdout, errOut)
	}
	first, err := os.ReadFile(out)
	if err != nil || len(first) < 1000 {
		t.Fatalf("%d bytes: %v", len(first), err)
	}
	code, stdout, _ = runLathe(t, "export", "--int8", seedModel, "--onnx", out)
	if code != 0 || !strings.Contains(stdout, "opset 17") {
		t.Fatalf("--int8: exit %d: %s", code, stdout)
	}
	widened, _ := os.ReadFile(out)
	if len(widened) <= len(first) {
		t.Errorf("8-bit codes take %d bytes, 4-bit ones %d", len(widened), len(first))
	}
	code, _, errOut = runLathe(t, "export", seedTraining, "--onnx", out)
	if code != 1 || !strings.Contains(errOut, "training.arrow") || !strings.Contains(errOut, "not a model file") {
		t.Fatalf("a training checkpoint: exit %d: %s", code, errOut)
	}
	if after, _ := os.ReadFile(out); !bytes.Equal(after, widened) {
		t.Error("a refused export changed the file already there")
	}
	if code, _, _ := runLathe(t, "export", seedModel); code != 2 {
		t.Errorf("no --onnx: exit %d, want 2", code)
	}
	// Its input, a directory, a file of another kind: refused, untouched.
	dir := t.TempDir()
	model := filepath.Join(dir, "m.arrow")
	orig, _ := os.ReadFile(seedModel)
	os.WriteFile(model, orig, 0o644)
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("mine"), 0o644)
	for _, tc := range []struct{ target, want string }{
		{model, "the input file itself"},
		{dir, "a directory"},
		{notes, "exists and is not an ONNX model"},
	} {
		code, _, errOut := runLathe(t, "export", model, "--onnx", tc.target)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("--onnx %s: exit %d: %s", tc.target, code, errOut)
		}
	}
	if b, _ := os.ReadFile(model); !bytes.Equal(b, orig) {
		t.Error("an export over its input changed it")
	}
	if b, _ := os.ReadFile(notes); string(b) != "mine" {
		t.Error("an export over a text file changed it")
	}
}

// TestProfile: lathe profile writes a profile the package reads back, with
// a table for every layer and its checks' errors printed; bad widths,
// formats and a training checkpoint are refused, naming what is wrong.
func TestProfile(t *testing.T) {
	out := filepath.Join(t.TempDir(), "profile.json")
	code, stdout, errOut := runLathe(t, "profile", seedModel, "-o", out, "--widths", "1,0.5", "--formats", "dense,sparse-0.9", "--precisions", "float", "--budget", "1ms", "--check", "2", "--threads", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	p, err := profile.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Layers) == 0 || len(p.Variants) == 0 || p.DenseUs <= 0 || p.Threads != 1 || !strings.Contains(stdout, "random 2") || !strings.Contains(stdout, "largest prediction error") {
		t.Fatalf("profile %+v\n%s", p, stdout)
	}
	for _, tc := range []struct{ args, want string }{
		{"--widths 0.5,1", "the first must be 1"},
		{"--formats dense,csr", `format "csr"`},
		{"--precisions int4", `precision "int4"`},
		{"--batch 0", "a batch in [1,"},
	} {
		args := append([]string{"profile", seedModel, "-o", out}, strings.Fields(tc.args)...)
		if code, _, errOut := runLathe(t, args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d: %s", tc.args, code, errOut)
		}
	}
	if code, _, errOut := runLathe(t, "profile", seedTraining, "-o", out); code != 1 || !strings.Contains(errOut, "not a model file") {
		t.Errorf("a training checkpoint: exit %d: %s", code, errOut)
	}
}

// TestImport: lathe import writes a model file of a PyTorch export that
// eval scores as eval scores the ONNX file itself; an operator lathe
// cannot express is refused naming its node, and nothing is written.
func TestImport(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "cnn.arrow")
	code, stdout, stderr := runLathe(t, "import", "../../onnx/testdata/mnist_cnn.op17.onnx", "-o", out, "--dataset", "mnist")
	if code != 0 || !strings.Contains(stdout, "6 layers (2 conv, 2 batchnorm, 1 global_avgpool, 1 linear)") || !strings.Contains(stdout, "10 classes") {
		t.Fatalf("import: code %d\n%s%s", code, stdout, stderr)
	}
	// inspect describes the network with its tensors.
	if code, stdout, _ := runLathe(t, "inspect", out); code != 0 || !strings.Contains(stdout, "6 layers (2 conv, 2 batchnorm, 1 global_avgpool, 1 linear), 438 parameters") || !strings.Contains(stdout, "dataset mnist") {
		t.Errorf("inspect: code %d\n%s", code, stdout)
	}
	var fromFile, fromONNX Evaluation
	for _, c := range []struct {
		args []string
		into *Evaluation
	}{{[]string{"eval", out, "--json"}, &fromFile}, {[]string{"eval", "../../onnx/testdata/mnist_cnn.op17.onnx", "--dataset", "mnist", "--json"}, &fromONNX}} {
		code, stdout, stderr := runLathe(t, c.args...)
		if code != 0 {
			t.Fatalf("%v: code %d: %s", c.args, code, stderr)
		}
		if err := json.Unmarshal([]byte(stdout), c.into); err != nil {
			t.Fatal(err)
		}
	}
	if fromFile.Dataset != "mnist" || fromFile.TestAccuracy != fromONNX.TestAccuracy || fromFile.Params != 438 {
		t.Errorf("the model file scores %+v, the ONNX file %+v", fromFile, fromONNX)
	}
	bad := filepath.Join(dir, "bad.arrow")
	code, _, stderr = runLathe(t, "import", "../../onnx/testdata/bad_dilation.op17.onnx", "-o", bad)
	if code != 1 || !strings.Contains(stderr, `node "/c/Conv" (Conv)`) {
		t.Errorf("an unsupported operator: code %d, %s", code, stderr)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a refused import wrote its model file")
	}
	if code, _, _ := runLathe(t, "eval", "../../onnx/testdata/mnist_cnn.op17.onnx"); code != 1 {
		t.Errorf("eval of an ONNX file without --dataset: code %d", code)
	}
}

// TestCompress: lathe compress writes a 4-bit GPTQ model file of an
// imported model and reports, as JSON, each layer's calibration error at
// most round-to-nearest's and the accuracy before and after; bad flags
// are refused.
func TestCompress(t *testing.T) {
	out := filepath.Join(t.TempDir(), "w4.arrow")
	code, stdout, stderr := runLathe(t, "compress", "../../onnx/testdata/mnist_cnn.op17.onnx", "--dataset", "mnist", "-o", out, "--bits", "4", "--gptq", "--samples", "32", "--json")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	var r struct {
		Layers []struct {
			Layer    string  `json:"layer"`
			Method   string  `json:"method"`
			Error    float64 `json:"output_error"`
			Baseline float64 `json:"baseline_error"`
		} `json:"layers"`
		Folded   int       `json:"batch_norms_folded"`
		Accuracy []float64 `json:"test_accuracy"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if len(r.Layers) != 3 || r.Folded != 2 || len(r.Accuracy) != 2 {
		t.Fatalf("report %+v", r)
	}
	for _, l := range r.Layers {
		if l.Method != "gptq" || l.Error > l.Baseline*1.0001 {
			t.Errorf("layer %+v", l)
		}
	}
	f, err := checkpoint.Read(out)
	if err != nil || f.Tensor("c2").Quant == nil || f.Tensor("c2").Quant.Bits != 4 {
		t.Fatalf("the written file: %v", err)
	}
	if code, _, stderr := runLathe(t, "compress", "../../onnx/testdata/mnist_cnn.op17.onnx", "--dataset", "mnist", "-o", out, "--gptq"); code != 1 || !strings.Contains(stderr, "GPTQ needs weight bits") {
		t.Errorf("GPTQ without bits: code %d, %s", code, stderr)
	}
}

// TestCompressRecipe: lathe compress --recipe takes the compression from
// the recipe's post_training block and calibrates on its job's data as a
// run does (what validation leaves, the job's seed); the flags it
// replaces are refused, as is a recipe without the block.
func TestCompressRecipe(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "post.hcl")
	src := `job "post" {
  dataset    = "mnist"
  epochs     = 1
  batch      = 64
  validation = 50000
  model {
    file = "` + absTest(t, "../../onnx/testdata/mnist_cnn.op17.onnx") + `"
  }
  post_training {
    bits        = 3
    gptq        = true
    activations = 8
    samples     = 48
  }
}
`
	if err := os.WriteFile(recipe, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "w3.arrow")
	code, stdout, stderr := runLathe(t, "compress", "../../onnx/testdata/mnist_cnn.op17.onnx", "--recipe", recipe, "-o", out, "--no-eval")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "48 calibration samples") {
		t.Errorf("stdout: %s", stdout)
	}
	f, err := checkpoint.Read(out)
	if err != nil || f.Tensor("c2").Quant == nil || f.Tensor("c2").Quant.Bits != 3 {
		t.Fatalf("the written file: %v", err)
	}
	if m, _, err := rundir.LoadModel(f); err != nil || len(m.ActQuant) == 0 {
		t.Errorf("no activation ranges in the file (%v)", err)
	}
	if code, _, stderr := runLathe(t, "compress", "../../onnx/testdata/mnist_cnn.op17.onnx", "--recipe", recipe, "-o", out, "--bits", "4"); code != 1 || !strings.Contains(stderr, "--bits: with --recipe") {
		t.Errorf("--bits beside --recipe: code %d, %s", code, stderr)
	}
	bare := filepath.Join(dir, "bare.hcl")
	if err := os.WriteFile(bare, []byte(strings.Replace(src, "  post_training {\n    bits        = 3\n    gptq        = true\n    activations = 8\n    samples     = 48\n  }\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runLathe(t, "compress", "../../onnx/testdata/mnist_cnn.op17.onnx", "--recipe", bare, "-o", out); code != 1 || !strings.Contains(stderr, "no post_training block") {
		t.Errorf("a recipe without post_training: code %d, %s", code, stderr)
	}
}

func absTest(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestBalance: lathe balance adds per-class offsets to the output layer's
// bias, tuned on the validation split: validation macro accuracy does not
// fall, and lathe eval of the written file gives the test accuracy and
// macro accuracy balance reported.
func TestBalance(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bal.arrow")
	code, stdout, stderr := runLathe(t, "balance", "../../onnx/testdata/mnist_cnn.op17.onnx", "--dataset", "mnist", "-o", out, "--validation", "2000", "--json")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	var r struct {
		Offsets      []float64  `json:"offsets"`
		ValMacro     [2]float64 `json:"val_macro_accuracy"`
		TestAccuracy [2]float64 `json:"test_accuracy"`
		TestMacro    [2]float64 `json:"test_macro_accuracy"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if len(r.Offsets) != 10 || r.ValMacro[1] < r.ValMacro[0] {
		t.Fatalf("report %+v", r)
	}
	code, stdout, stderr = runLathe(t, "eval", out, "--json")
	if code != 0 {
		t.Fatalf("eval: code %d: %s", code, stderr)
	}
	var ev Evaluation
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatal(err)
	}
	if math.Abs(ev.TestAccuracy-r.TestAccuracy[1]) > 1e-9 || math.Abs(ev.MacroAccuracy-r.TestMacro[1]) > 1e-9 {
		t.Errorf("eval of the written file: %v, macro %v; balance said %v, %v", ev.TestAccuracy, ev.MacroAccuracy, r.TestAccuracy[1], r.TestMacro[1])
	}
	if code, _, stderr := runLathe(t, "balance", "../../onnx/testdata/mnist_cnn.op17.onnx", "--dataset", "mnist"); code != 2 || !strings.Contains(stderr, "-o OUT.arrow is required") {
		t.Errorf("without -o: code %d, %s", code, stderr)
	}
}
