package rundir

import (
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/model"
)

// A data-parallel worker's snapshot holds no optimizer values (each
// worker keeps its own chunk's state only, which travels apart): it still
// goes through the checkpoint encoding a joiner gets, and comes back with
// its parameters, masks and running sums, and as many empty optimizer
// buffers as it had — what a following coordinator takes at a sync point
// (trainer.Follower).
func TestWorkerSnapshotRoundTrips(t *testing.T) {
	c, sn, m := lenet300Snapshot(t)
	sn.Step, sn.StepInEpoch, sn.EpochStarted, sn.LossSum, sn.Correct = 96, 96, true, 41.5, 9000
	for i := range sn.Optimizer {
		sn.Optimizer[i] = []float32{}
	}
	f, err := c.File(sn, m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := checkpoint.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoint.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadTraining(back, "sync")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := model.New(st.Snapshot.Spec, model.MNISTInput, 2) // other weights: the file's replace them
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Restore(back, "sync", m2); err != nil {
		t.Fatal(err)
	}
	got := st.Snapshot
	if got.Step != 96 || got.StepInEpoch != 96 || !got.EpochStarted || got.LossSum != 41.5 || got.Correct != 9000 {
		t.Fatalf("counters and sums: %+v", got)
	}
	if len(got.Optimizer) != len(sn.Optimizer) {
		t.Fatalf("%d optimizer buffers, want %d", len(got.Optimizer), len(sn.Optimizer))
	}
	for i := range sn.Params {
		if len(got.Optimizer[i]) != 0 || !slices.Equal(got.Params[i], sn.Params[i]) || !slices.Equal(got.Masks[i], sn.Masks[i]) {
			t.Fatalf("parameter %d: %d optimizer values, parameters or mask differ", i, len(got.Optimizer[i]))
		}
	}
}
