package rundir

import (
	"fmt"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/trainer"
)

// SyncState encodes a data-parallel worker's snapshot of model m (its
// optimizer buffers empty: each worker keeps its own chunk's state, which
// travels apart) for a following coordinator: the checkpoint encoding a
// joiner gets, with the batch norms' running statistics.
func SyncState(sn *trainer.Snapshot, job string, m *model.Model) ([]byte, error) {
	f, err := (&Checkpointer{Job: job}).File(sn, m)
	if err != nil {
		return nil, err
	}
	return checkpoint.Encode(f)
}

// ReadSyncState reads what SyncState wrote into a snapshot for the
// follower's trainer, whose model m takes the running statistics; the
// trainer checks the rest (the step, the architecture, the sizes).
func ReadSyncState(b []byte, m *model.Model) (*trainer.Snapshot, error) {
	const what = "the workers' state"
	f, err := checkpoint.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("run: %s: %w", what, err)
	}
	st, err := ReadTraining(f, what)
	if err != nil {
		return nil, err
	}
	sn := st.Snapshot
	sn.Params, sn.Masks = nil, nil
	for _, p := range m.Params {
		t := f.Tensor(p.Name)
		if t == nil || t.Role != checkpoint.RoleParam || len(t.Data) != len(p.Data()) {
			return nil, fmt.Errorf("run: %s has no parameter %s of %d values", what, p.Name, len(p.Data()))
		}
		sn.Params = append(sn.Params, t.Data)
		var mask []byte
		if t := f.Tensor("mask/" + p.Name); t != nil {
			if t.Role != checkpoint.RoleMask || len(t.Mask) != len(p.Data()) {
				return nil, fmt.Errorf("run: %s: the mask of %s has %d values, want %d", what, p.Name, len(t.Mask), len(p.Data()))
			}
			mask = t.Mask
		}
		sn.Masks = append(sn.Masks, mask)
	}
	sn.Optimizer = numbered(f, "optim/")
	if t := f.Tensor("hint/projection"); t != nil {
		sn.HintProjection, sn.HintOptimizer = t.Data, numbered(f, "hint/optim/")
	}
	if err := setBuffers(m, f); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, what)
	}
	return sn, nil
}
