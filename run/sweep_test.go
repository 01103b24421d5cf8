package run

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/rundir"
)

// TestSweep runs the test recipe at two learning rates and two epoch
// counts: four runs, each in its own directory, in one table; a value the
// recipe refuses stops the sweep before anything runs.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tiny.hcl")
	if err := os.WriteFile(file, []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	lr, err := ParseSweep("lr=0.05, 0.2")
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := ParseSweep("epochs=1,2")
	out := filepath.Join(dir, "out")
	rows, err := Sweep(context.Background(), file, []string{"batch=128"}, []SweepVar{lr, ep}, out, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, r := range rows {
		if r.Error != "" || r.TestAccuracy < 0.5 {
			t.Fatalf("row %+v", r)
		}
		if _, err := os.Stat(filepath.Join(r.RunDir, rundir.SummaryFile)); err != nil {
			t.Fatal(err)
		}
	}
	if rows[0].Vars["lr"] != "0.05" || rows[3].Vars["epochs"] != "2" || rows[0].TestAccuracy == rows[2].TestAccuracy {
		t.Fatalf("rows %+v", rows)
	}
	b, err := os.ReadFile(filepath.Join(out, SweepCSV))
	if err != nil || strings.Count(string(b), "\n") != 5 || !strings.HasPrefix(string(b), "lr,epochs,test_accuracy") {
		t.Fatalf("sweep.csv %q %v", b, err)
	}
	if !testing.Short() {
		// Job-parallel: the same sweep as tasks for two cluster workers,
		// two points at a time. Each point's run directory comes back from
		// the worker that ran it, with the weights of the in-process run
		// (the same engine and thread count).
		tc := startCluster(t, 2)
		cout := filepath.Join(dir, "cluster")
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		defer cancel()
		if err := tc.coord.WaitWorkers(ctx, 2); err != nil {
			t.Fatal(err)
		}
		crows, err := Sweep(ctx, file, []string{"batch=128"}, []SweepVar{lr, ep}, cout, Options{Cluster: tc.coord, Logger: testLog("run")})
		if err != nil {
			dumpCluster(t)
			t.Fatal(err)
		}
		used := map[string]bool{}
		for i, r := range crows {
			used[r.Worker] = true
			if r.Error != "" || r.Vars["lr"] != rows[i].Vars["lr"] || r.Vars["epochs"] != rows[i].Vars["epochs"] || r.TestAccuracy != rows[i].TestAccuracy {
				t.Fatalf("cluster row %+v, in-process %+v", r, rows[i])
			}
			if a, b := weightsDigest(t, filepath.Join(r.RunDir, rundir.ModelFile)), weightsDigest(t, filepath.Join(rows[i].RunDir, rundir.ModelFile)); a != b {
				t.Fatalf("point %d: weights %s on a worker, %s in-process", i+1, a, b)
			}
			for _, f := range []string{rundir.SummaryFile, rundir.MetricsFile, rundir.RecipeFile} {
				if _, err := os.Stat(filepath.Join(r.RunDir, f)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(used) != 2 {
			t.Fatalf("the points ran on %v, want both workers", used)
		}
		b, err := os.ReadFile(filepath.Join(cout, SweepCSV))
		if err != nil || strings.Count(string(b), "\n") != 5 || !strings.Contains(string(b), ",local") && !strings.Contains(string(b), ",w1,") {
			t.Fatalf("the cluster sweep's sweep.csv %q %v", b, err)
		}
	}
	bad, _ := ParseSweep("lr=0.1,-1")
	if _, err := Sweep(context.Background(), file, nil, []SweepVar{bad}, filepath.Join(dir, "bad"), Options{}); err == nil {
		t.Fatal("a sweep with a refused value ran")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad", "sweep")); err == nil {
		t.Fatal("a refused sweep ran some of its points")
	}
	for _, s := range []string{"lr", "=1", "lr=", "lr=1,,2"} {
		if _, err := ParseSweep(s); err == nil {
			t.Errorf("--sweep %q accepted", s)
		}
	}
}
