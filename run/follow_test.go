package run

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// TestClusterFollowingCoordinator trains the cluster recipe (a teacher,
// then a pruned, quantized, distilled student, with momentum) with a
// coordinator that takes the workers' state every 4 steps instead of
// reducing each step: on two workers, on two of which one is killed
// mid-phase (both restart from the coordinator's last sync point), on one
// that a second joins mid-phase, and on two of which one computes a NaN.
// Every run's model holds the weights of one worker with a coordinator
// that reduces every step, to the bit.
func TestClusterFollowingCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("trains five clusters")
	}
	base := t.TempDir()
	clusterRun(t, startReducingCluster(t, 1), base, nil)
	want := weightsDigest(t, filepath.Join(base, rundir.ModelFile))

	tc := startCluster(t, 2)
	tc.syncEvery = 4
	two := t.TempDir()
	s2 := clusterRun(t, tc, two, nil)
	c := s2.Cluster
	if c.SyncEvery != 4 || c.Workers != 2 || c.Restarts != 0 || c.DigestsCompared == 0 || c.DigestMismatches != 0 || c.MessagesRejected != 0 {
		t.Fatalf("two workers, the coordinator following: %+v", c)
	}
	if got := weightsDigest(t, filepath.Join(two, rundir.ModelFile)); got != want {
		t.Fatalf("two workers, the coordinator following: %s, one worker reducing every step %s", got, want)
	}

	// A worker killed in the student's first epoch, while the coordinator
	// lags: the survivor restarts from the coordinator's last sync point.
	tc = startCluster(t, 2)
	tc.syncEvery = 4
	lost := t.TempDir()
	var once sync.Once
	s3 := clusterRun(t, tc, lost, func(p trainer.Progress) {
		if p.Epochs != 2 || p.Epoch != 1 {
			return
		}
		if p.Step >= 4 && p.Step < 20 {
			time.Sleep(50 * time.Millisecond)
		}
		if p.Step >= 8 {
			once.Do(func() { go tc.kill("w2") })
		}
	})
	if s3.Cluster.WorkersLost != 1 || s3.Cluster.Restarts == 0 {
		t.Fatalf("a lost worker, the coordinator following: %+v", s3.Cluster)
	}
	if !strings.Contains(clusterLog.String(), "restarting the phase from the coordinator's state") {
		t.Fatal("the survivor did not restart from the coordinator's state")
	}
	if got := weightsDigest(t, filepath.Join(lost, rundir.ModelFile)); got != want {
		t.Fatalf("after a lost worker, the coordinator following: %s, fault-free %s", got, want)
	}

	// One worker, and a second that registers in the student's first
	// epoch: both restart from the coordinator's last sync point.
	tc = startCluster(t, 1)
	tc.syncEvery = 4
	joined := t.TempDir()
	s5 := clusterRun(t, tc, joined, func(p trainer.Progress) {
		if p.Epochs != 2 || p.Epoch != 1 {
			return
		}
		if p.Step == 4 {
			tc.addWorker(t, "w2")
		}
		if p.Step >= 4 && p.Step < 30 {
			time.Sleep(20 * time.Millisecond)
		}
	})
	if s5.Cluster.WorkersJoined != 1 || s5.Cluster.Workers != 2 || s5.Cluster.Restarts == 0 || s5.Cluster.DigestMismatches != 0 {
		t.Fatalf("a worker joining mid-phase, the coordinator following: %+v", s5.Cluster)
	}
	if got := weightsDigest(t, filepath.Join(joined, rundir.ModelFile)); got != want {
		t.Fatalf("after a worker joined mid-phase, the coordinator following: %s, fault-free %s", got, want)
	}

	// Two workers, one of which computes a NaN in the student's second
	// epoch: it is quarantined, and the other restarts from the last sync
	// point without it.
	tc = startCluster(t, 1)
	tc.syncEvery = 4
	tc.addWorker(t, "w2", poison{at: 50})
	sick := t.TempDir()
	s4 := clusterRun(t, tc, sick, nil)
	if s4.Cluster.WorkersFailed != 1 || s4.Cluster.WorkersLost != 0 || s4.Cluster.Restarts == 0 {
		t.Fatalf("a quarantined worker, the coordinator following: %+v", s4.Cluster)
	}
	if got := weightsDigest(t, filepath.Join(sick, rundir.ModelFile)); got != want {
		t.Fatalf("after a quarantined worker, the coordinator following: %s, fault-free %s", got, want)
	}
}
