package run

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/recipes"
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
	// A cluster: the coordinator computes the logits and ships them.
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
	if a, b := weightsDigest(t, filepath.Join(one, ModelFile)), weightsDigest(t, filepath.Join(two, ModelFile)); a != b {
		t.Fatalf("offline distillation on 1 worker %s, on 2 %s", a, b)
	}
}
