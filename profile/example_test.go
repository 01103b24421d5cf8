package profile_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/profile"
)

// A profile as lathe profile writes it (here by hand: one linear layer
// reading the input and writing a group of 64 channels, the classifier
// after it), a prediction, and the solver's choice under a budget.
func Example() {
	us := func(a, b, c, d float64) [][]float64 { return [][]float64{{a, b}, {c, d}} }
	p := &profile.Profile{Version: profile.Version, Widths: []float64{1, 0.5},
		Formats: []string{profile.Dense, profile.Sparse(0.9)}, Precisions: []string{profile.Float},
		Groups: []profile.Group{{Channels: 784}, {Channels: 64, Prunable: true, Producers: []string{"fc1"}}, {Channels: 10}},
		Layers: []profile.Layer{
			{Name: "fc1", Kind: "linear", Weighted: true, In: 0, Out: 1, Us: map[string][][]float64{
				profile.Dense: us(40, 21, -1, -1), profile.Sparse(0.9): us(12, 7, -1, -1)}},
			{Name: "fc2", Kind: "linear", Weighted: true, In: 1, Out: 2, Us: map[string][][]float64{
				profile.Dense: us(2, -1, 1, -1), profile.Sparse(0.9): us(2, -1, 1, -1)}},
		},
		OverheadUs: 1}
	dense, _ := p.Predict(profile.Config{})
	half, _ := p.Predict(profile.Config{Keep: []float64{1, 0.5, 1}})
	fmt.Printf("dense %.0f µs, half of fc1's outputs %.0f µs\n", dense, half)

	// Thinning fc1 costs 0.4 pp, 90 % sparsity 0.3 pp: under 16 µs the
	// sparse layer wins (15 µs with the classifier and the overhead).
	loss := profile.Loss{Width: [][]float64{nil, {0, 0.004}}, Format: map[string]map[string]float64{"fc1": {profile.Sparse(0.9): 0.003}}}
	sol, _ := p.Solve(loss, profile.Budget{LatencyUs: 16})
	fmt.Printf("%v keep %v: %.0f µs, loss %.3f, met %v\n", sol.Config.Format, sol.Config.Keep, sol.PredictedUs, sol.Loss, sol.Met)
	// Output:
	// dense 43 µs, half of fc1's outputs 23 µs
	// map[fc1:sparse-0.9] keep [1 1 1]: 15 µs, loss 0.003, met true
}

// A memory budget: the runtime memory each layer adds (parameters as its
// kernels hold them, a share of its output buffer) is a table like the
// times; the solver holds the sum under the budget.
func Example_memory() {
	kb := func(a, b, c, d float64) [][]float64 { return [][]float64{{a * 1024, b * 1024}, {c * 1024, d * 1024}} }
	us := func(a, b, c, d float64) [][]float64 { return [][]float64{{a, b}, {c, d}} }
	p := &profile.Profile{Version: profile.Version, Widths: []float64{1, 0.5},
		Formats: []string{profile.Dense, profile.Sparse(0.9)}, Precisions: []string{profile.Float},
		Groups: []profile.Group{{Channels: 784}, {Channels: 64, Prunable: true, Producers: []string{"fc1"}}, {Channels: 10}},
		Layers: []profile.Layer{
			{Name: "fc1", Kind: "linear", Weighted: true, In: 0, Out: 1,
				Us:     map[string][][]float64{profile.Dense: us(40, 21, -1, -1), profile.Sparse(0.9): us(12, 7, -1, -1)},
				Memory: map[string][][]float64{profile.Dense: kb(200, 100, -1, -1), profile.Sparse(0.9): kb(40, 20, -1, -1)}},
			{Name: "fc2", Kind: "linear", Weighted: true, In: 1, Out: 2,
				Us:     map[string][][]float64{profile.Dense: us(2, -1, 1, -1), profile.Sparse(0.9): us(2, -1, 1, -1)},
				Memory: map[string][][]float64{profile.Dense: kb(3, -1, 1.5, -1), profile.Sparse(0.9): kb(3, -1, 1.5, -1)}},
		},
		OverheadUs: 1, OverheadMemory: 4096, DenseMemory: 207 * 1024}
	dense, _ := p.PredictMemory(profile.Config{})
	fmt.Printf("dense %.0f KiB\n", dense/1024)

	loss := profile.Loss{Width: [][]float64{nil, {0, 0.004}}, Format: map[string]map[string]float64{"fc1": {profile.Sparse(0.9): 0.003}}}
	sol, _ := p.Solve(loss, profile.Budget{MemoryBytes: 64 * 1024})
	fmt.Printf("%v keep %v: %.0f KiB, loss %.3f, met %v\n", sol.Config.Format, sol.Config.Keep, sol.PredictedMemory/1024, sol.Loss, sol.Met)
	// Output:
	// dense 207 KiB
	// map[fc1:sparse-0.9] keep [1 1 1]: 47 KiB, loss 0.003, met true
}
