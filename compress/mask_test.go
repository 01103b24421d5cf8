package compress

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randWeight(name string, seed uint64, shape ...int) Weight {
	n := 1
	for _, d := range shape {
		n *= d
	}
	r := rand.New(rand.NewPCG(seed, 1))
	w := Weight{Name: name, Shape: shape, Data: make([]float32, n)}
	for i := range w.Data {
		w.Data[i] = float32(r.NormFloat64())
	}
	return w
}

func count(mask []byte) (kept int) {
	for _, m := range mask {
		kept += int(m)
	}
	return kept
}

func TestMagnitudePrunesTheSmallest(t *testing.T) {
	w := randWeight("fc1", 1, 30, 20)
	mask := Magnitude(w, 0.9)
	if k := count(mask); k != 60 {
		t.Fatalf("kept %d, want 60", k)
	}
	var maxPruned, minKept float64 = 0, math.Inf(1)
	for i, v := range w.Data {
		a := math.Abs(float64(v))
		if mask[i] == 0 {
			maxPruned = max(maxPruned, a)
		} else {
			minKept = min(minKept, a)
		}
	}
	if maxPruned > minKept {
		t.Fatalf("pruned |w| up to %v but kept one of %v", maxPruned, minKept)
	}
	// Pruned weights (now zero) stay pruned as the target grows.
	Apply(mask, w.Data)
	more := Magnitude(w, 0.95)
	for i := range mask {
		if mask[i] == 0 && more[i] == 1 {
			t.Fatalf("weight %d revived", i)
		}
	}
}

func TestGlobalMagnitudeUsesOneThreshold(t *testing.T) {
	a := randWeight("a", 1, 10, 10)
	b := randWeight("b", 2, 10, 10)
	for i := range b.Data {
		b.Data[i] *= 10 // b's weights are larger: global pruning takes more of a
	}
	masks := GlobalMagnitude([]Weight{a, b}, 0.5)
	ka, kb := count(masks[0]), count(masks[1])
	if ka+kb != 100 || ka >= kb {
		t.Fatalf("kept %d of a and %d of b", ka, kb)
	}
}

func TestStructured(t *testing.T) {
	lin := randWeight("fc1", 3, 8, 6)
	for _, tc := range []struct {
		w      Weight
		g      Granularity
		groups int
		size   int // weights per group
	}{
		{lin, Rows, 8, 6},
		{lin, Columns, 6, 8},
		{randWeight("conv2", 4, 6, 3, 3, 4), Filters, 6, 36},
		{randWeight("conv2", 4, 6, 3, 3, 4), Channels, 4, 54},
	} {
		for _, norm := range []Norm{L1, L2} {
			mask, err := Structured(tc.w, tc.g, norm, 0.5)
			if err != nil {
				t.Fatal(err)
			}
			if k := count(mask); k != tc.groups/2*tc.size {
				t.Fatalf("%s %s: kept %d weights, want %d", tc.g, norm, k, tc.groups/2*tc.size)
			}
			n, groupOf, _ := Groups(tc.w, tc.g)
			seen := make([]int, n) // per group: -1 mixed, else the mask value + 1
			for i, m := range mask {
				g := groupOf(i)
				if seen[g] == 0 {
					seen[g] = int(m) + 1
				} else if seen[g] != int(m)+1 {
					t.Fatalf("%s: group %d partly pruned", tc.g, g)
				}
			}
		}
	}
	if _, err := Structured(lin, Filters, L1, 0.5); err == nil {
		t.Fatal("filters of a linear weight accepted")
	}
}

func TestNOfMKeepsAtMostN(t *testing.T) {
	for _, tc := range []struct{ n, m, cols int }{{2, 4, 16}, {1, 4, 10}, {3, 8, 20}, {4, 4, 8}} {
		w := randWeight("fc", 5, 7, tc.cols)
		mask, err := NOfM(w, tc.n, tc.m)
		if err != nil {
			t.Fatal(err)
		}
		for r := 0; r < 7; r++ {
			for g := 0; g < tc.cols; g += tc.m {
				kept := 0
				var minKept, maxPruned float64 = math.Inf(1), 0
				for j := g; j < min(g+tc.m, tc.cols); j++ {
					a := math.Abs(float64(w.Data[r*tc.cols+j]))
					if mask[r*tc.cols+j] == 1 {
						kept++
						minKept = min(minKept, a)
					} else {
						maxPruned = max(maxPruned, a)
					}
				}
				if kept > tc.n || kept < min(tc.n, min(g+tc.m, tc.cols)-g) {
					t.Fatalf("%d:%d row %d group %d keeps %d", tc.n, tc.m, r, g, kept)
				}
				if maxPruned > minKept {
					t.Fatalf("%d:%d kept a smaller weight than it pruned", tc.n, tc.m)
				}
			}
		}
	}
	if _, err := NOfM(randWeight("fc", 1, 2, 4), 5, 4); err == nil {
		t.Fatal("N > M accepted")
	}
}

func TestStructuredSparsity(t *testing.T) {
	w := Weight{Name: "fc", Shape: []int{4, 2}, Data: []float32{0, 0, 1, 0, 0, 0, 0, 2}}
	if s := StructuredSparsity(w); s != 0.5 {
		t.Fatalf("structured sparsity %v", s)
	}
	if s := Sparsity(w.Data); s != 0.75 {
		t.Fatalf("sparsity %v", s)
	}
}

func TestNthSmallestAgreesWithSort(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for trial := 0; trial < 50; trial++ {
		n := 1 + r.IntN(500)
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.IntN(20)) // many ties
		}
		sorted := slices.Clone(x)
		slices.Sort(sorted)
		k := r.IntN(n)
		if got := nthSmallest(slices.Clone(x), k); got != sorted[k] {
			t.Fatalf("n=%d k=%d: %v, want %v", n, k, got, sorted[k])
		}
	}
}

func TestMagnitudeTiesArePrunedInOrder(t *testing.T) {
	w := Weight{Name: "fc", Shape: []int{2, 4}, Data: []float32{1, -1, 1, 3, 1, 2, -1, 4}}
	mask := Magnitude(w, 0.5) // four of the five ±1s go, the first four by position
	want := []byte{0, 0, 0, 1, 0, 1, 1, 1}
	if !slices.Equal(mask, want) {
		t.Fatalf("mask %v, want %v", mask, want)
	}
}
