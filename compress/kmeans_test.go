package compress

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestKMeansFindsClusters(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	centres := []float32{-0.5, -0.1, 0.2, 0.6}
	var v []float32
	for i := 0; i < 4000; i++ {
		v = append(v, centres[i%4]+float32(r.NormFloat64()*0.01))
	}
	c, a, err := KMeans(v, 4, 30)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range centres {
		if math.Abs(float64(c[k]-want)) > 0.005 {
			t.Fatalf("centroids %v, want ≈ %v", c, centres)
		}
	}
	for i := range v {
		if a[i] != uint8(i%4) {
			t.Fatalf("value %d (%v) in cluster %d", i, v[i], a[i])
		}
	}
	if !slices.IsSorted(c) {
		t.Fatal("centroids not sorted")
	}
	c2, a2, _ := KMeans(v, 4, 30)
	if !slices.Equal(c, c2) || !slices.Equal(a, a2) {
		t.Fatal("not deterministic")
	}
	if _, _, err := KMeans(v, 1, 10); err == nil {
		t.Fatal("k = 1 accepted")
	}
}

func TestAssignNearestTies(t *testing.T) {
	c := []float32{0, 1, 1, 2}
	a := make([]uint8, 4)
	AssignNearest(c, []float32{0.5, 1, 1.4, 10}, a)
	if !slices.Equal(a, []uint8{0, 1, 1, 3}) {
		t.Fatalf("assignments %v", a)
	}
}
