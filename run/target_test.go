package run

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/profile"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// targetRecipe is the test recipe searching from a model file under a
// target block.
func targetRecipe(file, target string) string {
	src := strings.Replace(recipe, "    arch   = \"mlp\"\n    hidden = [32]\n", "    file = \""+file+"\"\n", 1)
	if !strings.Contains(target, "precisions") {
		target += "\n    precisions = [\"float\"]"
	}
	return strings.Replace(src, "  optimizer", "  target {\n"+target+"\n    threads = 1\n    widths = [1, 0.5]\n    formats = [\"dense\", \"sparse-0.9\"]\n  }\n  optimizer", 1)
}

// TestTargetSearch: a search from a dense model file writes its profile,
// every round as a point of search.json and pareto.csv, and the chosen
// round's model and recipe — which, run again, gives the chosen model's
// weights bit for bit; a budget nothing meets is reported unmet with the
// fastest round, not trained twice; a profile from another machine is used as written (its
// dense latency, no measurement of the rounds).
func TestTargetSearch(t *testing.T) {
	base := t.TempDir()
	if _, err := Execute(context.Background(), load(t), Options{RunDir: filepath.Join(base, "dense"), Threads: 2}); err != nil {
		t.Fatal(err)
	}
	dense := filepath.Join(base, "dense", rundir.ModelFile)
	search := func(name, target string) *Search {
		t.Helper()
		j, err := recipes.Parse([]byte(targetRecipe(dense, target)), filepath.Join(base, name+".hcl"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Execute(context.Background(), j, Options{RunDir: filepath.Join(base, name), Threads: 2}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(base, name, SearchFile))
		if err != nil {
			t.Fatal(err)
		}
		var s Search
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	// A dry run says what the first round trains, writing nothing (met
	// or not: a 1 µs network's budget hangs on the machine's load).
	dj, err := recipes.Parse([]byte(targetRecipe(dense, "    latency_fraction = 0.7")), filepath.Join(base, "dry.hcl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var dry strings.Builder
	if err := TargetDryRun(&dry, dj, nil); err != nil || !strings.Contains(dry.String(), "first round (exhaustive, met ") || !strings.Contains(dry.String(), "µs") {
		t.Fatalf("dry run: %v\n%s", err, dry.String())
	}
	s := search("half", "    latency_fraction = 0.7\n    rounds = 2\n    max_accuracy_drop = 1")
	if !s.ProfiledHere || s.DenseLatencyUs <= 0 || len(s.Points) == 0 || s.Chosen < 0 || s.BudgetUs != 0.7*s.DenseLatencyUs {
		t.Fatalf("search %+v", s)
	}
	pt := s.Points[s.Chosen]
	if pt.MeasuredLatencyUs <= 0 || pt.ModelBytes <= 0 || pt.ValAccuracy <= 0 || pt.Met != (pt.MeasuredLatencyUs <= s.BudgetUs) || s.Met != pt.Met {
		t.Fatalf("chosen point %+v of %+v", pt, s)
	}
	csv, err := os.ReadFile(filepath.Join(base, "half", ParetoFile))
	if err != nil || strings.Count(string(csv), "\n") != len(s.Points)+1 {
		t.Fatalf("pareto.csv %q: %v", csv, err)
	}
	// The chosen recipe reproduces the chosen model.
	cj, err := recipes.Load(filepath.Join(base, "half", ChosenRecipe), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), cj, Options{RunDir: filepath.Join(base, "again"), Threads: 2}); err != nil {
		t.Fatal(err)
	}
	if weightsOf(t, filepath.Join(base, "again", rundir.ModelFile)) != weightsOf(t, filepath.Join(base, "half", rundir.ModelFile)) {
		t.Fatal("chosen.hcl does not reproduce the chosen model's weights")
	}

	// Nothing meets a budget of 1 ns: reported, the fastest round chosen,
	// and no second round trains the same closest configuration again.
	s = search("tight", "    latency_us = 0.001\n    rounds = 2\n    max_accuracy_drop = 1")
	if s.Met || s.Chosen < 0 || len(s.Points) != 1 {
		t.Fatalf("an unmeetable budget: %+v", s)
	}

	// A size budget alone: the file fits (the dense one is ≈ 102 KB).
	s = search("small", "    model_bytes = 60000\n    rounds = 2\n    max_accuracy_drop = 1")
	if pt = s.Points[s.Chosen]; !s.Met || s.BudgetBytes != 60000 || s.BudgetUs != 0 || pt.ModelBytes > 60000 || pt.PredictedBytes <= 0 {
		t.Fatalf("a size budget: %+v", s)
	}

	// A memory budget alone: 60 % of the dense network's runtime memory,
	// met as measured.
	dm := s.DenseMemory
	s = search("light", fmt.Sprintf("    memory_bytes = %d\n    rounds = 2\n    max_accuracy_drop = 1", dm*6/10))
	if pt = s.Points[s.Chosen]; dm <= 0 || !s.Met || s.BudgetMemory != dm*6/10 || pt.PredictedMemory <= 0 || pt.MeasuredMemory <= 0 || pt.MeasuredMemory > s.BudgetMemory {
		t.Fatalf("a memory budget (dense %d): %+v", dm, s)
	}

	// 20 KB: under the 8-bit file (≈ 27 KB) — 4-bit weights in the round's recipe.
	s = search("four", "    model_bytes = 20000\n    rounds = 2\n    max_accuracy_drop = 1\n    precisions = [\"int8\"]")
	pt = s.Points[s.Chosen]
	rb, err := os.ReadFile(pt.Recipe)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Met || pt.ModelBytes > 20000 || len(pt.Config.Bits) == 0 || !strings.Contains(string(rb), "layer_bits") {
		t.Fatalf("a 20 KB budget: %+v\n%s", s, rb)
	}

	// A profile from elsewhere: its numbers, not this machine's.
	p, err := profile.Read(filepath.Join(base, "half", ProfileFile))
	if err != nil {
		t.Fatal(err)
	}
	local := p.DenseUs // this machine's dense latency, ≈ its layers' sum
	p.DenseUs, p.Machine.CPU = 1e6, "elsewhere"
	for i := range p.Layers {
		for _, tab := range p.Layers[i].Us {
			for _, row := range tab {
				for j := range row {
					row[j] *= 1000
				}
			}
		}
	}
	if err := p.Write(filepath.Join(base, "elsewhere.json")); err != nil {
		t.Fatal(err)
	}
	s = search("given", "    latency_fraction = 0.7\n    rounds = 1\n    max_accuracy_drop = 1\n    profile = \"elsewhere.json\"")
	if s.ProfiledHere || s.DenseLatencyUs != 1e6 || s.Points[0].MeasuredLatencyUs != -1 || s.Points[0].PredictedLatencyUs < 100*local {
		t.Fatalf("a given profile (this machine's dense %.2f µs): %+v", local, s)
	}
	if _, err := os.Stat(filepath.Join(base, "given", ProfileFile)); err == nil {
		t.Fatal("a given profile was measured again")
	}
}

// TestTargetSearchOnWorkers: with a cluster, the settings' one-shot costs
// are "cost" tasks on the workers and the rounds train there; the costs
// are the same bits as the search's in this process, so with the same
// profile the solver picks the same first round.
func TestTargetSearchOnWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a dense model and two searches")
	}
	base := t.TempDir()
	if _, err := Execute(context.Background(), load(t), Options{RunDir: filepath.Join(base, "dense"), Threads: 2}); err != nil {
		t.Fatal(err)
	}
	dense := filepath.Join(base, "dense", rundir.ModelFile)
	target := "    latency_fraction = 0.7\n    rounds = 1\n    max_accuracy_drop = 1\n    precisions = [\"int8\"]"
	job := func(target string) *recipes.Job {
		j, err := recipes.Parse([]byte(targetRecipe(dense, target)), filepath.Join(base, "search.hcl"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	if _, err := Execute(context.Background(), job(target), Options{RunDir: filepath.Join(base, "here"), Threads: 2}); err != nil {
		t.Fatal(err)
	}
	// The cluster's search takes the profile measured here, so that both
	// solve the same problem.
	tc := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*clusterTimeout)
	defer cancel()
	if err := tc.coord.WaitWorkers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	given := target + "\n    profile = \"" + filepath.Join(base, "here", ProfileFile) + "\""
	if _, err := Execute(ctx, job(given), Options{RunDir: filepath.Join(base, "workers"), Cluster: tc.coord, Logger: testLog("run")}); err != nil {
		dumpCluster(t)
		t.Fatal(err)
	}
	if !strings.Contains(clusterLog.String(), "settings' costs evaluated by the workers") {
		t.Fatal("the settings' costs were not evaluated by the workers")
	}
	read := func(dir, name string, v any) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(base, dir, name))
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("%s/%s: %v", dir, name, err)
		}
		return b
	}
	var lh, lw profile.Loss
	bh, bw := read("here", SearchLossFile, &lh), read("workers", SearchLossFile, &lw)
	if string(bh) != string(bw) || lh.Int8 == nil || len(lh.Bits4) == 0 || len(lh.Format) == 0 {
		t.Fatalf("the costs differ:\nhere    %s\nworkers %s", bh, bw)
	}
	var sh, sw Search
	read("here", SearchFile, &sh)
	read("workers", SearchFile, &sw)
	if len(sh.Points) == 0 || len(sw.Points) == 0 || fmt.Sprint(sh.Points[0].Config) != fmt.Sprint(sw.Points[0].Config) || sw.Points[0].ValAccuracy <= 0 {
		t.Fatalf("first rounds: here %+v, workers %+v", sh.Points, sw.Points)
	}
}
