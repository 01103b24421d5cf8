package schedule

import (
	"math"
	"testing"
)

func TestSparsityTargetsFollowTheFormulas(t *testing.T) {
	agp := Sparsity{Kind: "agp", Initial: 0.05, Final: 0.9, Start: 1000, End: 11000, Every: 1000}
	poly := agp
	poly.Kind, poly.Power = "polynomial", 2
	lin := agp
	lin.Kind = "linear"
	it := agp
	it.Kind = "iterative"
	for _, tc := range []struct {
		name string
		s    Sparsity
		at   int64
		want float64
	}{
		{"agp start", agp, 1000, 0.05},
		{"agp 30%", agp, 4000, 0.9 + (0.05-0.9)*math.Pow(0.7, 3)},
		{"agp half", agp, 6000, 0.9 + (0.05-0.9)*0.125},
		{"agp end", agp, 11000, 0.9},
		{"agp after", agp, 50000, 0.9},
		{"polynomial half", poly, 6000, 0.9 + (0.05-0.9)*0.25},
		{"linear 30%", lin, 4000, 0.9 + (0.05-0.9)*0.7},
		{"iterative half", it, 6000, 1 - 0.95*math.Sqrt(0.1/0.95)},
		{"iterative end", it, 11000, 0.9},
		{"one shot", Sparsity{Kind: "one_shot", Final: 0.8, Start: 500}, 500, 0.8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.s.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.s.Target(tc.at); math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("Target(%d) = %.15f, want %.15f", tc.at, got, tc.want)
			}
		})
	}
}

func TestSparsityEventsDoNotDependOnBatch(t *testing.T) {
	s := Sparsity{Kind: "agp", Final: 0.9, Start: 1000, End: 10000, Every: 3000}
	want := []int64{1000, 4000, 7000, 10000}
	for _, batch := range []int64{1, 7, 100, 256, 999} {
		var got []int64
		for from := int64(0); from < 20000; from += batch {
			if at, ok := s.EventIn(from, from+batch); ok {
				got = append(got, at)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("batch %d: events %v, want %v", batch, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("batch %d: events %v, want %v", batch, got, want)
			}
		}
	}
	one := Sparsity{Kind: "one_shot", Final: 0.5, Start: 300}
	n := 0
	for from := int64(0); from < 1000; from += 64 {
		if _, ok := one.EventIn(from, from+64); ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("one-shot fired %d times", n)
	}
}

func TestSparsityValidate(t *testing.T) {
	for _, s := range []Sparsity{
		{Kind: "cubic", Final: 0.5, End: 1, Every: 1},
		{Kind: "agp", Final: 1, End: 1, Every: 1},
		{Kind: "agp", Final: -0.1, End: 1, Every: 1},
		{Kind: "agp", Initial: 0.6, Final: 0.5, End: 1, Every: 1},
		{Kind: "agp", Final: 0.5, Start: 10, End: 5, Every: 1},
		{Kind: "agp", Final: 0.5, End: 5, Every: 0},
		{Kind: "polynomial", Final: 0.5, End: 5, Every: 1},
	} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

func TestGuardPausesAndResumes(t *testing.T) {
	g := &Guard{Tolerance: 0.01}
	steps := []struct {
		acc  float64
		seen int64
		want GuardEvent
	}{
		{0.95, 100, GuardBaseline},
		{0.97, 200, GuardBaseline}, // still before the window (start 200): latest wins
		{0.965, 300, GuardNone},    // within tolerance
		{0.955, 400, GuardPause},   // 1.5 points below
		{0.958, 500, GuardNone},    // still low: stays paused, no second pause
		{0.962, 600, GuardResume},
		{0.90, 700, GuardPause},
	}
	for i, s := range steps {
		if got := g.Observe(s.acc, s.seen, 200); got != s.want {
			t.Fatalf("observation %d: %v, want %v (guard %+v)", i, got, s.want, g)
		}
	}
	if g.Baseline != 0.97 || g.Pauses != 2 || !g.Paused {
		t.Fatalf("guard %+v", g)
	}
}
