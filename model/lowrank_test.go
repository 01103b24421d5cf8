package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestFactorizeFullRankReproducesTheLayer(t *testing.T) {
	m, _ := New(Spec{Arch: "mlp", Hidden: []int{40, 30}}, MNISTInput, 3)
	r := rand.New(rand.NewPCG(2, 2))
	x := make([]float32, 3*784)
	for i := range x {
		x[i] = r.Float32()
	}
	want := logits(t, m, x, 3)
	for _, layer := range []string{"fc1", "fc2"} {
		full := min(m.Param(layer).Shape[0], m.Param(layer).Shape[1])
		f, rank, err := m.Factorize(layer, full, 0)
		if err != nil {
			t.Fatal(err)
		}
		if rank != full || f.Param(layer + ".v").Shape[0] != full || f.Param(layer) != nil {
			t.Fatalf("%s: rank %d, shapes %v", layer, rank, f.Param(layer+".v").Shape)
		}
		got := logits(t, f, x, 3)
		for i := range want {
			// SVD in float64, factors rounded to float32: ≈ 1e-6 relative.
			if math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s: logit %d: factorized %v, original %v", layer, i, got[i], want[i])
			}
		}
	}
}

func TestFactorizeByEnergyAndErrors(t *testing.T) {
	m, _ := New(Spec{Arch: "lenet300"}, MNISTInput, 1)
	f, rank, err := m.Factorize("fc1", 0, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if rank <= 0 || rank >= 300 || f.NumParams() >= m.NumParams() {
		t.Fatalf("energy 0.5 gave rank %d, %d params vs %d", rank, f.NumParams(), m.NumParams())
	}
	// Thinning a factorized model keeps the factorization.
	if _, _, err := f.Thin(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Factorize("fc1", 301, 0); err == nil {
		t.Fatal("rank above min(out, in) accepted")
	}
	if _, _, err := m.Factorize("fc9", 10, 0); err == nil {
		t.Fatal("unknown layer accepted")
	}
	l5, _ := New(Spec{Arch: "lenet5"}, MNISTInput, 1)
	if _, _, err := l5.Factorize("conv1", 5, 0); err == nil {
		t.Fatal("a convolution accepted")
	}
}
