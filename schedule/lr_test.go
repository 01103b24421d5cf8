package schedule

import (
	"math"
	"testing"
)

func TestLR(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    LR
		at   int64
		want float64
	}{
		{"constant", LR{Kind: "constant", Base: 0.1, Total: 100}, 57, 0.1},
		{"warmup start", LR{Kind: "constant", Base: 0.1, Warmup: 10, Total: 100}, 0, 0.01},
		{"warmup end", LR{Kind: "constant", Base: 0.1, Warmup: 10, Total: 100}, 9, 0.1},
		{"step before", LR{Kind: "step", Base: 1, Every: 10, Gamma: 0.5, Total: 100}, 9, 1},
		{"step after two", LR{Kind: "step", Base: 1, Every: 10, Gamma: 0.5, Total: 100}, 25, 0.25},
		{"cosine start", LR{Kind: "cosine", Base: 1, Total: 100}, 0, 1},
		{"cosine middle", LR{Kind: "cosine", Base: 1, Min: 0.2, Total: 100}, 50, 0.6},
		{"cosine end", LR{Kind: "cosine", Base: 1, Min: 0.2, Total: 100}, 100, 0.2},
		{"cosine past end", LR{Kind: "cosine", Base: 1, Total: 100}, 150, 0},
		{"cosine after warmup", LR{Kind: "cosine", Base: 1, Warmup: 20, Total: 120}, 70, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.s.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.s.At(tc.at); math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("At(%d) = %v, want %v", tc.at, got, tc.want)
			}
		})
	}
}

func TestLRValidate(t *testing.T) {
	for _, s := range []LR{
		{Kind: "exp", Base: 1, Total: 1},
		{Kind: "constant", Base: -1, Total: 1},
		{Kind: "constant", Base: 1, Total: 0},
		{Kind: "step", Base: 1, Total: 1, Every: 0, Gamma: 0.1},
		{Kind: "cosine", Base: 1, Min: 2, Total: 1},
	} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}
