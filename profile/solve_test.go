package profile

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

func ptr(v float64) *float64 { return &v }

// TestSolve: on the synthetic table (16 configurations, enumerated by
// hand in the comments) the solver picks the known optimum for each
// budget — exhaustively, and by the Lagrangian relaxation alike — and a
// budget that nothing meets is reported unmet with the fastest
// configuration.
func TestSolve(t *testing.T) {
	p := synthetic()
	loss := Loss{Width: [][]float64{nil, {0, 0.2}, {0, 0.5}}, Format: map[string]map[string]float64{"fc1": {Sparse(0.9): 0.1}}, Int8: ptr(0.3)}
	for _, tc := range []struct {
		budget float64
		want   Config
		us     float64
		met    bool
	}{
		// 24 µs at 0.1: fc1 sparse; dense float is 36.
		{30, Config{Keep: []float64{1, 1, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 24, true},
		// 15 µs at 0.3 beats int8 (16 µs, over), half of conv1 on int8 (11.5 µs at 0.5).
		{15.5, Config{Keep: []float64{1, 0.5, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 15, true},
		{12, Config{Keep: []float64{1, 0.5, 1, 1}, Format: map[string]string{}, Int8: true}, 11.5, true},
		// Nothing under 9 µs: the fastest, at the lesser loss of the two at 9 µs.
		{8, Config{Keep: []float64{1, 0.5, 0.5, 1}, Format: map[string]string{}, Int8: true}, 9, false},
	} {
		for _, limit := range []int{ExhaustiveLimit, 0} {
			saved := ExhaustiveLimit
			ExhaustiveLimit = limit
			sol, err := p.Solve(loss, Budget{LatencyUs: tc.budget})
			ExhaustiveLimit = saved
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sol.Config, tc.want) || math.Abs(sol.PredictedUs-tc.us) > 1e-9 || sol.Met != tc.met {
				t.Errorf("budget %g µs (%s): %+v at %g µs, met %v; want %+v at %g µs, met %v", tc.budget, sol.Method, sol.Config, sol.PredictedUs, sol.Met, tc.want, tc.us, tc.met)
			}
		}
	}
	if _, err := p.Solve(Loss{Format: map[string]map[string]float64{"pool": {Dense: 0}}}, Budget{LatencyUs: 1}); err == nil {
		t.Fatal("a loss for a layer without weights was accepted")
	}
}

// TestSolveRandom: on random tables (a layer's time falling with its
// groups' widths, as a profile's do; its formats' times in any order) the
// solver's latency is Predict's for the configuration it returns, and the
// Lagrangian search meets every budget the enumeration meets, at a loss
// no smaller than the enumeration's least.
func TestSolveRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		p := synthetic()
		for li := range p.Layers {
			for _, key := range p.keys() { // in order: the tables are a pure function of the seed
				tab := p.Layers[li].Us[key]
				c := 20 * r.Float64()
				for i := range tab {
					for j := range tab[i] {
						if tab[i][j] >= 0 {
							tab[i][j] = c * (0.2 + p.Widths[i]*p.Widths[j]) * (0.9 + 0.2*r.Float64())
						}
					}
				}
			}
		}
		loss := Loss{Width: [][]float64{nil, {0, r.Float64()}, {0, r.Float64()}},
			Format: map[string]map[string]float64{"fc1": {Sparse(0.9): r.Float64()}, "conv1": {Sparse(0.9): r.Float64()}}, Int8: ptr(r.Float64())}
		dense, _ := p.Predict(Config{})
		budget := dense * (0.3 + 0.6*r.Float64())
		ex, err := p.Solve(loss, Budget{LatencyUs: budget})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := p.Predict(ex.Config); err != nil || math.Abs(got-ex.PredictedUs) > 1e-9 {
			t.Fatalf("trial %d: solver says %g µs, Predict %g (%v)", trial, ex.PredictedUs, got, err)
		}
		saved := ExhaustiveLimit
		ExhaustiveLimit = 0
		lg, err := p.Solve(loss, Budget{LatencyUs: budget})
		ExhaustiveLimit = saved
		if err != nil {
			t.Fatal(err)
		}
		if ex.Met && (!lg.Met || lg.Loss < ex.Loss-1e-12 || lg.PredictedUs > budget) {
			t.Fatalf("trial %d: exhaustive %+v, lagrangian %+v", trial, ex, lg)
		}
		if !ex.Met && lg.Met {
			t.Fatalf("trial %d: the lagrangian met a budget the enumeration did not", trial)
		}
	}
}

// TestSolveBytes: a model-bytes budget, alone, picks the least loss whose
// predicted file fits (hand-enumerated on the synthetic table with sizes:
// int8 a quarter of float, 4-bit an eighth); latency and bytes together
// must both hold.
func TestSolveBytes(t *testing.T) {
	p := synthetic()
	b := func(a, b, c, d float64) [][]float64 { return [][]float64{{a, b}, {c, d}} }
	sizes := map[string]map[string][][]float64{
		"conv1": {Dense: b(100, 50, -1, -1), Sparse(0.9): b(30, 15, -1, -1)},
		"fc1":   {Dense: b(1000, 500, 500, 250), Sparse(0.9): b(100, -1, -1, 25)},
		"fc2":   {Dense: b(10, -1, 5, -1), Sparse(0.9): b(10, -1, 5, -1)},
	}
	for i := range p.Layers {
		l := &p.Layers[i]
		if !l.Weighted {
			continue
		}
		l.Bytes = map[string][][]float64{}
		for f, tab := range sizes[l.Name] {
			l.Bytes[f] = tab
			q := b(tab[0][0]/4, tab[0][1]/4, tab[1][0]/4, tab[1][1]/4)
			for r := range q {
				for c := range q[r] {
					if tab[r][c] < 0 {
						q[r][c] = -1
					}
				}
			}
			l.Bytes[Key(Int8, f)] = q
			h := b(q[0][0]/2, q[0][1]/2, q[1][0]/2, q[1][1]/2) // 4-bit codes: half of 8-bit
			for r := range h {
				for c := range h[r] {
					if q[r][c] < 0 {
						h[r][c] = -1
					}
				}
			}
			l.Bytes[Key4(f)] = h
		}
	}
	loss := Loss{Width: [][]float64{nil, {0, 0.2}, {0, 0.5}}, Format: map[string]map[string]float64{"fc1": {Sparse(0.9): 0.1}}, Int8: ptr(0.3), Bits4: map[string]float64{"fc1": 0.05}}
	for _, tc := range []struct {
		budget Budget
		want   Config
		bytes  float64
	}{
		// 1 110 bytes dense; fc1 sparse: 210 at 0.1.
		{Budget{ModelBytes: 400}, Config{Keep: []float64{1, 1, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 210},
		// conv1 halved, fc1 sparse: 50 + √(100·25) + 10 = 110 at 0.3 (int8 alone: 277.5).
		{Budget{ModelBytes: 150}, Config{Keep: []float64{1, 0.5, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 110},
		// Both: 110 bytes take 15 µs; under 12 µs as well only int8 with conv1 halved (11.5 µs, 140 bytes).
		{Budget{ModelBytes: 150, LatencyUs: 12}, Config{Keep: []float64{1, 0.5, 1, 1}, Format: map[string]string{}, Int8: true}, 140},
		// 45 bytes: int8, fc1 sparse in 4 bits: 25 + 12.5 + 2.5 = 40 at 0.45 (conv1 halved instead: 27.5 at 0.6).
		{Budget{ModelBytes: 45}, Config{Keep: []float64{1, 1, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}, Int8: true, Bits: map[string]int{"fc1": 4}}, 40},
	} {
		for _, limit := range []int{ExhaustiveLimit, 0} {
			saved := ExhaustiveLimit
			ExhaustiveLimit = limit
			sol, err := p.Solve(loss, tc.budget)
			ExhaustiveLimit = saved
			if err != nil {
				t.Fatal(err)
			}
			if !sol.Met || !reflect.DeepEqual(sol.Config, tc.want) || math.Abs(sol.PredictedBytes-tc.bytes) > 1e-9 {
				t.Errorf("%+v (%s): %+v, %g bytes, met %v; want %+v, %g bytes", tc.budget, sol.Method, sol.Config, sol.PredictedBytes, sol.Met, tc.want, tc.bytes)
			}
			if got, err := p.PredictBytes(sol.Config); err != nil || math.Abs(got-sol.PredictedBytes) > 1e-9 {
				t.Errorf("PredictBytes %g (%v), the solver's %g", got, err, sol.PredictedBytes)
			}
		}
	}
	if _, err := p.Solve(loss, Budget{}); err == nil {
		t.Fatal("an empty budget was accepted")
	}
}

// TestSolveMemory: a memory budget picks the least loss whose predicted
// runtime memory fits (the synthetic table's memory twice its float
// bytes, integer kernels saving none: they only cost loss here); one
// nothing meets is reported unmet; a profile without memory tables is
// refused a memory budget.
func TestSolveMemory(t *testing.T) {
	p := synthetic()
	b := func(a, b, c, d float64) [][]float64 { return [][]float64{{a, b}, {c, d}} }
	mem := map[string]map[string][][]float64{
		"conv1": {Dense: b(200, 100, -1, -1), Sparse(0.9): b(60, 30, -1, -1)},
		"fc1":   {Dense: b(2000, 1000, 1000, 500), Sparse(0.9): b(200, -1, -1, 50)},
		"fc2":   {Dense: b(20, -1, 10, -1), Sparse(0.9): b(20, -1, 10, -1)},
	}
	loss := Loss{Width: [][]float64{nil, {0, 0.2}, {0, 0.5}}, Format: map[string]map[string]float64{"fc1": {Sparse(0.9): 0.1}}, Int8: ptr(0.3)}
	if _, err := p.Solve(loss, Budget{MemoryBytes: 1000}); err == nil {
		t.Fatal("a memory budget was accepted from a profile without memory tables")
	}
	p.DenseMemory = 2220
	for i := range p.Layers {
		l := &p.Layers[i]
		l.Memory = map[string][][]float64{}
		for _, pr := range p.Precisions {
			for _, f := range p.Formats {
				l.Memory[Key(pr, f)] = b(0, 0, 0, 0) // a layer without weights: nothing
				if tab, ok := mem[l.Name][f]; ok {
					l.Memory[Key(pr, f)] = tab
				}
			}
		}
	}
	for _, tc := range []struct {
		budget Budget
		want   Config
		mem    float64
		met    bool
	}{
		// 2 220 dense; fc1 sparse: 420 at 0.1.
		{Budget{MemoryBytes: 800}, Config{Keep: []float64{1, 1, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 420, true},
		// conv1 halved, fc1 sparse: 100 + √(200·50) + 20 = 220 at 0.3.
		{Budget{MemoryBytes: 300}, Config{Keep: []float64{1, 0.5, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 220, true},
		// Nothing fits 100: the least memory there is, unmet (fc1 thinned
		// at its outputs stays dense: 100 + 500 + 10).
		{Budget{MemoryBytes: 100}, Config{Keep: []float64{1, 0.5, 1, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 220, false},
	} {
		sol, err := p.Solve(loss, tc.budget)
		if err != nil {
			t.Fatal(err)
		}
		if sol.Met != tc.met || math.Abs(sol.PredictedMemory-tc.mem) > 1e-9 || !reflect.DeepEqual(sol.Config, tc.want) {
			t.Errorf("%+v: %+v, %g bytes of memory, met %v; want %+v, %g, met %v", tc.budget, sol.Config, sol.PredictedMemory, sol.Met, tc.want, tc.mem, tc.met)
		}
		if got, err := p.PredictMemory(sol.Config); err != nil || math.Abs(got-sol.PredictedMemory) > 1e-9 {
			t.Errorf("PredictMemory %g (%v), the solver's %g", got, err, sol.PredictedMemory)
		}
	}
}
