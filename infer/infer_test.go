package infer

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// TestAgreesWithTheTrainingGraph runs a real model file (pruned, 4-bit
// weights, 8-bit activations) through the runtime with each kernel and
// through the training graph, over the MNIST test set: the top-1 answers
// agree on ≥ 99.9 % of the images and so does the accuracy, within that.
func TestAgreesWithTheTrainingGraph(t *testing.T) {
	f, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	eng := cpu.New(cpu.Options{Threads: 2})
	m, err := Load(f, eng)
	if err != nil {
		t.Fatal(err)
	}
	gm, _, err := rundir.LoadModel(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if !slices.Contains(l.Candidates(), Int8) {
			t.Errorf("layer %s (quantized weights, quantized input) has no int8 kernel", l.Name)
		}
	}
	agreesWithGraph(t, m, gm, eng, []int{1, 37, 256})
	if _, err := m.Forward(make([]float32, 10), 1); err == nil || !strings.Contains(err.Error(), "784 features") {
		t.Fatalf("a wrong input shape: %v", err)
	}
}

// TestQuantizedOutputsAreExact: a layer whose weights and input are
// quantized and whose output is quantized again (fc1) may run only on
// integer codes, so its output — and every code after it — is the same
// whichever kernel measured fastest; the last layer, whose logits are
// not quantized, keeps every kernel. Forced to the float GEMM, fc1's
// activations stay within one step of the integer ones over the MNIST
// test set (a float sum can only move a value across the nearest code
// boundary — the rounding the rule keeps out of the result).
func TestQuantizedOutputsAreExact(t *testing.T) {
	f, err := checkpoint.Read("../checkpoint/testdata/model.arrow")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(f, cpu.New(cpu.Options{Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	fc1, fc2 := m.Layers[0], m.Layers[1]
	if got := fc1.Candidates(); !slices.Equal(got, []string{Int8}) {
		t.Errorf("fc1 (quantized output) may run %v, want only int8", got)
	}
	if got := fc2.Candidates(); !slices.Contains(got, Dense) || !slices.Contains(got, CSRT) {
		t.Errorf("fc2 (logits) may run %v, want the float kernels too", got)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	n := test.Len()
	x, labels, idx := make([]float32, n*test.Features()), make([]float32, n), make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	(&data.Batcher{Set: test}).Fill(x, labels, idx, 0)
	hidden := func(kernel string) []float32 {
		if err := m.Force(kernel); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, n*fc1.Out)
		m.run(fc1, fc1.Kernels[0], y, x, n)
		fc1.actQ.Apply(y)
		return y
	}
	exact, float := hidden(Int8), hidden(Dense)
	moved := 0
	for i := range exact {
		if d := math.Abs(float64(exact[i] - float[i])); d > 0 {
			moved++
			if d > 1.001*float64(fc1.actQ.Scale) {
				t.Fatalf("activation %d: integer %g, float %g: more than a step apart", i, exact[i], float[i])
			}
		}
	}
	t.Logf("%d of %d activation codes move when fc1 runs in float", moved, len(exact))
}

func TestRefusesWhatItCannotRun(t *testing.T) {
	f, err := checkpoint.Read("../checkpoint/testdata/training.arrow")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f, cpu.New(cpu.Options{Threads: 1})); err == nil || !strings.Contains(err.Error(), "not a model file") {
		t.Fatalf("a training checkpoint: %v", err)
	}
	mf, _ := checkpoint.Read("../checkpoint/testdata/model.arrow")
	for state, want := range map[string]string{
		`{"input":{"rows":28,"cols":28,"channels":1,"classes":10},"layers":[{"name":"a1","kind":"attention"}]}`:                                                                                                                 "attention layer, which the runtime does not run",
		`{"input":{"rows":28,"cols":28,"channels":1,"classes":10},"layers":[{"name":"conv1","kind":"conv","in_shape":[28,28,3]}]}`:                                                                                              "input shape [28 28 3] for 784 inputs",
		`{"input":{"rows":28,"cols":28,"channels":1,"classes":10}}`:                                                                                                                                                             "lists no layers",
		`{"input":{"rows":28,"cols":28,"channels":1,"classes":10},"format":3,"network":{}}`:                                                                                                                                     "format 3; this lathe reads formats 1 to 2",
		`{"input":{"rows":28,"cols":28,"channels":1,"classes":10},"format":2,"network":{"input":{"h":28,"w":28,"c":1},"classes":10,"layers":[{"name":"fc1","kind":"linear","in":{"h":1,"w":1,"c":784},"out":5,"act":"relu"}]}}`: "the last layer produces 5 values for 10 classes",
	} {
		mf.State = []byte(state)
		if _, err := Load(mf, cpu.New(cpu.Options{Threads: 1})); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", state, err, want)
		}
	}
}

// TestLeNet5AgreesWithTheTrainingGraph runs a LeNet-5 (convolutions,
// max-pooling; weights 80 % zero, so both kernels matter) through the
// runtime and the training graph.
func TestLeNet5AgreesWithTheTrainingGraph(t *testing.T) {
	gm, err := model.New(model.Spec{Arch: "lenet5"}, model.MNISTInput, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range gm.Weights() {
		d := p.Data()
		for i := range d {
			if i%5 != 0 {
				d[i] = 0
			}
		}
	}
	f := modelFile(t, gm, "lenet5")
	eng := cpu.New(cpu.Options{Threads: 2})
	m, err := Load(f, eng)
	if err != nil {
		t.Fatal(err)
	}
	agreesWithGraph(t, m, gm, eng, []int{100})
}

// agreesWithGraph runs the first 3 000 MNIST test images (enough, and
// short) through the runtime, with each kernel forced on every layer at
// each batch size, and through the training graph of the same model: the
// top-1 answers must agree on ≥ 99.9 % of them.
func agreesWithGraph(t *testing.T, m *Model, gm *model.Model, eng compute.Engine, batches []int) {
	t.Helper()
	_, full, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	test := *full
	test.Images, test.Labels = full.Images[:3000*full.Features()], full.Labels[:3000]
	want, err := trainer.PredictModel(gm, eng, &test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, kernel := range []string{Dense, CSR, CSRT, Int8, NM} {
		_ = m.Force(kernel) // layers without it run dense
		for _, batch := range batches {
			got, err := Predict(m, &test, batch)
			if err != nil {
				t.Fatal(err)
			}
			same := 0
			for i := range got {
				if got[i] == want.Class[i] {
					same++
				}
			}
			if frac := float64(same) / float64(len(got)); frac < 0.999 {
				t.Fatalf("%s kernels, batch %d: top-1 agrees with the training graph on %.4f of the images", kernel, batch, frac)
			}
		}
	}
}

// modelFile exports a model as a model file, through its encoding.
func modelFile(t testing.TB, gm *model.Model, job string) *checkpoint.File {
	t.Helper()
	mf, err := rundir.ExportModel(gm, job, "mnist", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := checkpoint.Encode(mf)
	if err != nil {
		t.Fatal(err)
	}
	f, err := checkpoint.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
