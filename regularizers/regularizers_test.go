package regularizers

import (
	"math"
	"testing"

	"github.com/lathe-ml/lathe/compress"
)

func TestGroupLassoProxShrinksByTheProximalAmount(t *testing.T) {
	// Rows of a 3x4 linear weight with norms 2, 0.5 and 10.
	w := compress.Weight{Name: "fc1", Shape: []int{3, 4}, Data: []float32{
		1, 1, 1, 1,
		0.25, 0.25, 0.25, 0.25,
		5, 5, 5, 5,
	}}
	const tt = 0.5 // threshold per row: 0.5·√4 = 1
	zero, err := GroupLassoProx(w, compress.Rows, tt)
	if err != nil {
		t.Fatal(err)
	}
	norms := []float64{}
	for r := 0; r < 3; r++ {
		var s float64
		for _, v := range w.Data[r*4 : (r+1)*4] {
			s += float64(v) * float64(v)
		}
		norms = append(norms, math.Sqrt(s))
	}
	// float32 arithmetic: 1e-6 relative.
	if math.Abs(norms[0]-1) > 1e-6 || norms[1] != 0 || math.Abs(norms[2]-9) > 1e-5 || zero != 1 {
		t.Fatalf("norms after prox %v (zero groups %d), want [1 0 9] and 1", norms, zero)
	}
	// Direction is kept: row 2 is still uniform.
	for _, v := range w.Data[8:] {
		if math.Abs(float64(v)-4.5) > 1e-5 {
			t.Fatalf("row 2 = %v", w.Data[8:])
		}
	}
	p, _ := GroupLassoPenalty(w, compress.Rows)
	if math.Abs(p-2*(1+9)) > 1e-4 {
		t.Fatalf("penalty %v, want 20", p)
	}
}

func TestGroupLassoProxOnFilters(t *testing.T) {
	w := compress.Weight{Name: "conv1", Shape: []int{2, 1, 1, 2}, Data: []float32{3, 4, 0.1, 0.1}}
	zero, err := GroupLassoProx(w, compress.Filters, 1/math.Sqrt(2)) // threshold 1 per filter
	if err != nil || zero != 1 {
		t.Fatalf("zero %d err %v", zero, err)
	}
	if math.Abs(float64(w.Data[0])-2.4) > 1e-6 || math.Abs(float64(w.Data[1])-3.2) > 1e-6 || w.Data[2] != 0 || w.Data[3] != 0 {
		t.Fatalf("got %v", w.Data)
	}
	if _, err := GroupLassoProx(w, compress.Rows, 1); err == nil {
		t.Fatal("rows of a convolution accepted")
	}
}

func TestL1ProxAndL2(t *testing.T) {
	d := []float32{1, -1, 0.1, -0.05, 0}
	L1Prox(d, 0.2)
	want := []float32{0.8, -0.8, 0, 0, 0}
	for i := range d {
		if math.Abs(float64(d[i]-want[i])) > 1e-7 {
			t.Fatalf("L1 prox %v, want %v", d, want)
		}
	}
	g := []float32{0, 0}
	if p := L2Grad(g, []float32{2, -1}, 0.5); p != 1.25 || g[0] != 1 || g[1] != -0.5 {
		t.Fatalf("L2: penalty %v grad %v", p, g)
	}
	if Validate("l1", -1) == nil || Validate("l1", math.NaN()) == nil {
		t.Fatal("bad strengths accepted")
	}
}
