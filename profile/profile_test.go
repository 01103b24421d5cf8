package profile

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/infer"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
)

func modelFile(t *testing.T, spec model.Spec) *checkpoint.File {
	t.Helper()
	m, err := model.New(spec, model.MNISTInput, 1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := rundir.ExportModel(m, "t", "mnist", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func engine() *cpu.Engine {
	return cpu.New(cpu.Options{Threads: 1, Logger: hclog.NewNullLogger()})
}

// synthetic is a synthetic profile of a chain conv1 → pool → fc1 → fc2 over
// groups 0 (input), 1 (conv1's), 2 (fc1's), 3 (classes), two widths, one
// format at two precisions.
func synthetic() *Profile {
	us := func(a, b, c, d float64) [][]float64 { return [][]float64{{a, b}, {c, d}} }
	return &Profile{Version: Version, Widths: []float64{1, 0.5}, Formats: []string{Dense, Sparse(0.9)}, Precisions: []string{Float, Int8},
		Groups: []Group{{Channels: 1}, {Channels: 8, Prunable: true}, {Channels: 16, Prunable: true}, {Channels: 10}},
		Layers: []Layer{
			{Name: "conv1", Kind: "conv", Weighted: true, In: 0, Out: 1, Us: map[string][][]float64{
				Dense: us(10, 6, -1, -1), Sparse(0.9): us(12, 7, -1, -1), "int8:dense": us(5, 3, -1, -1), "int8:sparse-0.9": us(5, 3, -1, -1)}},
			{Name: "pool", Kind: "maxpool", In: 1, Out: 1, Follows: "conv1", Us: map[string][][]float64{
				Dense: us(2, -1, -1, 1), Sparse(0.9): us(2, -1, -1, 1), "int8:dense": us(1, -1, -1, 0.5), "int8:sparse-0.9": us(1, -1, -1, 0.5)}},
			{Name: "fc1", Kind: "linear", Weighted: true, In: 1, Out: 2, Us: map[string][][]float64{
				Dense: us(20, 12, 11, 4), Sparse(0.9): us(8, -1, -1, 2), "int8:dense": us(6, 4, 4, 2), "int8:sparse-0.9": us(6, 4, 4, 2)}},
			{Name: "fc2", Kind: "linear", Weighted: true, In: 2, Out: 3, Us: map[string][][]float64{
				Dense: us(1, -1, 0.5, -1), Sparse(0.9): us(1, -1, 0.5, -1), "int8:dense": us(1, -1, 0.5, -1), "int8:sparse-0.9": us(1, -1, 0.5, -1)}},
		},
		OverheadUs: 3}
}

// TestPredict: a configuration's latency is its layers' times from the
// table plus the overhead; a pair of widths not measured is the geometric
// mean of the equal pairs; settings the profile does not hold are refused.
func TestPredict(t *testing.T) {
	p := synthetic()
	for _, tc := range []struct {
		c    Config
		want float64
	}{
		{Config{}, 3 + 10 + 2 + 20 + 1},
		{Config{Keep: []float64{1, 0.5, 0.5, 1}}, 3 + 6 + 1 + 4 + 0.5},
		{Config{Keep: []float64{1, 1, 0.5, 1}}, 3 + 10 + 2 + 12 + 0.5},
		// fc1 sparse at (1, 0.5) was not measured: √(8·2); the pool follows conv1 (dense).
		{Config{Keep: []float64{1, 1, 0.5, 1}, Format: map[string]string{"fc1": Sparse(0.9)}}, 3 + 10 + 2 + 4 + 0.5},
		{Config{Keep: []float64{1, 0.5, 1, 1}, Int8: true}, 3 + 3 + 0.5 + 4 + 1},
	} {
		got, err := p.Predict(tc.c)
		if err != nil || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%+v: %g, %v; want %g", tc.c, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{Keep: []float64{1, 1}}, "2 groups for a network of 4"},
		{Config{Keep: []float64{1, 0.75, 1, 1}}, "keeps 0.75"},
		{Config{Keep: []float64{0.5, 1, 1, 1}}, "group 0"},
		{Config{Format: map[string]string{"pool": Dense}}, `"pool", not a weighted layer`},
		{Config{Format: map[string]string{"fc1": NM24}}, "was not profiled"},
	} {
		if _, err := p.Predict(tc.c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.c, err, tc.want)
		}
	}
	p.Precisions = []string{Float}
	if _, err := p.Predict(Config{Int8: true}); err == nil || !strings.Contains(err.Error(), "precision int8 was not profiled") {
		t.Errorf("int8 on a float-only profile: %v", err)
	}
}

// TestProfileFromElsewhere: a profile written on one machine and read on
// another predicts from its own table — nothing is measured here (the
// table's times are not this machine's and come back exactly).
func TestProfileFromElsewhere(t *testing.T) {
	p := synthetic()
	p.Machine = Machine{CPU: "a deployment target", Cores: 64, Arch: "arm64"}
	path := filepath.Join(t.TempDir(), "profile.json")
	if err := p.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		c := back.Random(r)
		a, err1 := back.Predict(c)
		b, err2 := p.Predict(c)
		if err1 != nil || err2 != nil || a != b {
			t.Fatalf("%+v: %g (%v) read back, %g (%v) written", c, a, err1, b, err2)
		}
	}
	if back.Machine.CPU != "a deployment target" {
		t.Fatalf("machine %+v", back.Machine)
	}
	// Spoiled files are refused, naming the problem.
	p.Layers[2].Us[Dense] = p.Layers[2].Us[Dense][:1]
	if err := p.Write(path); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "layer fc1, format dense: 1 rows of times for 2 widths") {
		t.Fatalf("a short table: %v", err)
	}
	p = synthetic()
	p.Version = 99
	p.Write(path)
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("a newer version: %v", err)
	}
}

// TestBuild: a configuration's network is thinned in its groups (each
// layer's shapes in the runtime), takes its formats (sparsity, 2:4), and
// runs on integer kernels when quantized; names that are not weights are
// refused.
func TestBuild(t *testing.T) {
	f := modelFile(t, model.Spec{Arch: "lenet5", Hidden: []int{32}, Conv: []int{8, 16}})
	eng := engine()
	load := func(c Config) map[string]*infer.Layer {
		t.Helper()
		vf, err := Build(f, c)
		if err != nil {
			t.Fatal(err)
		}
		m, err := infer.Load(vf, eng)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*infer.Layer{}
		for _, l := range m.Layers {
			out[l.Name] = l
		}
		return out
	}
	// Groups: input, conv1 (8), conv2 (16), fc1 (32), the classes.
	ls := load(Config{Keep: []float64{1, 0.5, 0.25, 0.75, 1}})
	if ls["conv1"].Out != 4 || ls["conv2"].Out != 4 || ls["conv2"].C != 4 || ls["fc1"].Out != 24 || ls["fc2"].In != 24 || ls["fc2"].Out != 10 {
		t.Fatalf("thinned: conv1 %d, conv2 %d×%d, fc1 %d, fc2 %d→%d", ls["conv1"].Out, ls["conv2"].C, ls["conv2"].Out, ls["fc1"].Out, ls["fc2"].In, ls["fc2"].Out)
	}
	ls = load(Config{Format: map[string]string{"fc1": Sparse(0.9), "conv2": NM24}})
	if fc1 := ls["fc1"]; math.Abs(float64(fc1.Nonzero)/float64(fc1.In*fc1.Out)-0.1) > 0.01 {
		t.Fatalf("fc1 at 90 %%: %d of %d non-zero", fc1.Nonzero, fc1.In*fc1.Out)
	}
	if !slices.Contains(ls["conv2"].Candidates(), infer.NM) || slices.Contains(ls["fc1"].Candidates(), infer.NM) {
		t.Fatalf("2:4 candidates: conv2 %v, fc1 %v", ls["conv2"].Candidates(), ls["fc1"].Candidates())
	}
	ls = load(Config{Int8: true, Bits: map[string]int{"fc1": 4}})
	for _, name := range []string{"conv1", "conv2", "fc1", "fc2"} {
		if !slices.Contains(ls[name].Candidates(), infer.Int8) {
			t.Fatalf("int8: %s can run %v", name, ls[name].Candidates())
		}
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{Format: map[string]string{"fc9": Dense}}, `"fc9", not a weight`},
		{Config{Format: map[string]string{"fc1": "sparse-1.5"}}, "sparse-S (0 < S < 1)"},
		{Config{Keep: []float64{1, 1, 1, 1, 0.5}}, "group 4 keeps 0.5"},
		{Config{Int8: true, Bits: map[string]int{"fc1": 12}}, "12 bits"},
	} {
		if _, err := Build(f, tc.c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.c, err, tc.want)
		}
	}
}

// TestMeasure: a profile of a small network holds a time for every layer
// at every precision, format and pair of widths its groups can take (a
// chain's groups alternate colours, so every pair is measured), each
// variant once, with the layers mapped onto the groups they read and
// write; on a residual network the groups joined by an addition are one.
func TestMeasure(t *testing.T) {
	f := modelFile(t, model.Spec{Arch: "lenet5", Hidden: []int{16}, Conv: []int{4, 8}})
	o := Options{Widths: []float64{1, 0.5}, Formats: []string{Dense, Sparse(0.8)}, Budget: time.Millisecond}
	p, err := Measure(f, engine(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Variants) != 2*2*4 || p.DenseUs <= 0 {
		t.Fatalf("%d variants, dense %g µs", len(p.Variants), p.DenseUs)
	}
	in := map[string][2]int{}
	for _, l := range p.Layers {
		in[l.Name] = [2]int{l.In, l.Out}
		for _, key := range p.keys() {
			for i, row := range l.Us[key] {
				for j, v := range row {
					// A layer reading or writing a fixed group is measured at its first width only.
					fixed := (!p.Groups[l.In].Prunable && i > 0) || (!p.Groups[l.Out].Prunable && j > 0) || (l.In == l.Out && i != j)
					if (v < 0) != fixed {
						t.Fatalf("layer %s, %s, widths %d, %d: %g µs", l.Name, key, i, j, v)
					}
				}
			}
		}
	}
	want := map[string][2]int{"conv1": {0, 1}, "conv1.pool": {1, 1}, "conv2": {1, 2}, "conv2.pool": {2, 2}, "fc1": {2, 3}, "fc2": {3, 4}}
	for name, g := range want {
		if in[name] != g {
			t.Fatalf("layers and groups: %v, want %v", in, want)
		}
	}
	if back, err := p.Predict(Config{}); err != nil || back <= 0 {
		t.Fatalf("dense prediction %g: %v", back, err)
	}
	// Runtime memory: measured for every variant, predicted within 15 %
	// (its parts are counted, not timed), the thinned ones below the dense.
	if p.DenseMemory <= 0 || !p.HasMemory() {
		t.Fatalf("dense memory %g", p.DenseMemory)
	}
	for _, v := range p.Variants {
		if v.Memory <= 0 || math.Abs(v.PredictedMemory/float64(v.Memory)-1) > 0.15 {
			t.Fatalf("variant %s %s %v: memory %d, predicted %g", v.Precision, v.Format, v.Keep, v.Memory, v.PredictedMemory)
		}
		if v.Format == Dense && v.Keep[1] < 1 && v.Keep[2] < 1 && float64(v.Memory) >= p.DenseMemory {
			t.Fatalf("thinned %v: %d bytes of memory, the dense %g", v.Keep, v.Memory, p.DenseMemory)
		}
	}

	r := modelFile(t, model.Spec{Arch: "resnet", Depth: 8})
	o.Precisions, o.Formats = []string{Float, Int8}, []string{Dense} // int8: the classifier after the global pooling stays float
	p, err = Measure(r, engine(), o)
	if err != nil {
		t.Fatal(err)
	}
	groupOf := map[string]int{}
	for _, l := range p.Layers {
		groupOf[l.Name] = l.Out
	}
	// Stage 1's stem, its block's second convolution and the sum are one group.
	if g := groupOf["conv1"]; g == 0 || groupOf["block1.conv2"] != g || groupOf["block1.add"] != g || groupOf["block1.conv1"] == g || groupOf["block2.sc"] != groupOf["block2.add"] {
		t.Fatalf("residual groups: %v", groupOf)
	}
	// A network of tokens: its inputs are ids as the runtime takes them.
	tm, err := model.New(model.Spec{Arch: "transformer", Dim: 16, Heads: 2, Blocks: 1, MLP: 32}, model.Input{Rows: 1, Cols: 16, Channels: 1, Classes: 4}, 1)
	if err != nil {
		t.Fatal(err)
	}
	tf, err := rundir.ExportModel(tm, "t", "langid", data.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err = Measure(tf, engine(), Options{Widths: []float64{1, 0.5}, Formats: []string{Dense}, Precisions: []string{Float}, Budget: time.Millisecond}); err != nil || p.DenseUs <= 0 {
		t.Fatalf("a transformer: %v", err)
	}

	// Integer kernels only: the dense network, which no variant is, is
	// still timed (a latency_fraction needs it).
	o.Precisions, o.Widths = []string{Int8}, []float64{1}
	if p, err = Measure(r, engine(), o); err != nil || p.DenseUs <= 0 || p.DenseBytes <= 0 {
		t.Fatalf("int8 only: dense %g µs, %g bytes: %v", p.DenseUs, p.DenseBytes, err)
	}
}
