package run

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

const offlineBlocks = `teacher {
    arch   = "mlp"
    hidden = [48]
    epochs = 1
  }
  distill {
    temperature = 2
    alpha       = 0.5
    offline     = %s
  }`

// TestOfflineDistillation: with distill.offline the teacher's logits for
// the training set are computed once and written to the run directory,
// the student trains from them to the online run's accuracy (the weights
// differ only through the teacher's logits, computed at another batch
// size), and two cluster workers get them from the coordinator and agree
// with one to the bit.
func TestOfflineDistillation(t *testing.T) {
	parse := func(offline string) *recipes.Job {
		j, err := recipes.Parse([]byte(withBlock(strings.Replace(offlineBlocks, "%s", offline, 1))), "tiny.hcl", []string{"epochs=2"})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	online, offline := t.TempDir(), t.TempDir()
	son, err := Execute(context.Background(), parse("false"), Options{RunDir: online, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	soff, err := Execute(context.Background(), parse("true"), Options{RunDir: offline, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	f, err := checkpoint.Read(filepath.Join(offline, TeacherLogitsFile))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := logitsFrom(f)
	if err != nil || len(lg) != 10000*10 {
		t.Fatalf("teacher logits: %d values, %v", len(lg), err)
	}
	h := soff.History[len(soff.History)-1]
	if h.DistillLoss <= 0 || soff.TestAccuracy < 0.8 {
		t.Fatalf("offline distillation: distill loss %v, test accuracy %v", h.DistillLoss, soff.TestAccuracy)
	}
	t.Logf("online %.4f, offline %.4f", son.TestAccuracy, soff.TestAccuracy)
	if d := soff.TestAccuracy - son.TestAccuracy; d < -0.01 || d > 0.01 {
		t.Fatalf("offline %v, online %v", soff.TestAccuracy, son.TestAccuracy)
	}
	if testing.Short() {
		return
	}
	// A cluster: the workers compute the logits, the coordinator ships the
	// table to the replicas.
	j := parse("true")
	one, two := t.TempDir(), t.TempDir()
	for _, c := range []struct {
		dir     string
		workers int
	}{{one, 1}, {two, 2}} {
		tc := startCluster(t, c.workers)
		ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
		if err := tc.coord.WaitWorkers(ctx, c.workers); err != nil {
			t.Fatal(err)
		}
		if _, err := Execute(ctx, j, Options{RunDir: c.dir, Cluster: tc.coord, Logger: testLog("run")}); err != nil {
			dumpCluster(t)
			t.Fatal(err)
		}
		cancel()
	}
	if a, b := weightsDigest(t, filepath.Join(one, rundir.ModelFile)), weightsDigest(t, filepath.Join(two, rundir.ModelFile)); a != b {
		t.Fatalf("offline distillation on 1 worker %s, on 2 %s", a, b)
	}
	// The workers computed the logits: in one piece, then split in two —
	// the same bits either way, and the same as the coordinator's own
	// engine (one thread) gives.
	l1, l2 := readLogits(t, filepath.Join(one, TeacherLogitsFile)), readLogits(t, filepath.Join(two, TeacherLogitsFile))
	if !slices.Equal(l1, l2) {
		t.Fatal("the teacher logits split across two workers differ from one worker's")
	}
	if n := strings.Count(clusterLog.String(), "teacher logits from a worker"); n < 3 {
		t.Fatalf("%d logits tasks came back from workers, want 1 + 2", n)
	}
	f1, err := checkpoint.Read(filepath.Join(one, "teacher", rundir.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	tm, _, err := rundir.LoadModel(f1)
	if err != nil {
		t.Fatal(err)
	}
	train, _, err := data.Load(j.Dataset, "")
	if err != nil {
		t.Fatal(err)
	}
	if train, _, err = data.SplitValidation(train, j.Validation); err != nil {
		t.Fatal(err)
	}
	own, err := trainer.TeacherLogits([]*model.Model{tm}, cpu.New(cpu.Options{Threads: 1}), train, j.EvalBatch)
	if err != nil || !slices.Equal(own, l1) {
		t.Fatalf("the workers' logits differ from the coordinator engine's (%v)", err)
	}
}

func readLogits(t *testing.T, path string) []float32 {
	t.Helper()
	f, err := checkpoint.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := logitsFrom(f)
	if err != nil {
		t.Fatal(err)
	}
	return lg
}
