package infer

import (
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/run"
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
	gm, _, err := run.LoadModel(f)
	if err != nil {
		t.Fatal(err)
	}
	_, test, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	want, err := trainer.PredictModel(gm, eng, test, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, kernel := range []string{Dense, CSR} {
		for _, l := range m.Layers {
			l.Small, l.Large = kernel, kernel
		}
		for _, batch := range []int{1, 256} {
			got, err := Predict(m, test, batch)
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
	if _, err := m.Forward(make([]float32, 10), 1); err == nil || !strings.Contains(err.Error(), "784 features") {
		t.Fatalf("a wrong input shape: %v", err)
	}
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
	mf.State = []byte(`{"input":{"rows":28,"cols":28,"channels":1,"classes":10},"layers":[{"name":"conv1","kind":"conv"}]}`)
	if _, err := Load(mf, cpu.New(cpu.Options{Threads: 1})); err == nil || !strings.Contains(err.Error(), "conv layer") {
		t.Fatalf("a convolution: %v", err)
	}
}
