package trainer

import "github.com/lathe-ml/lathe/model"

// State is what policies see at their hooks. Slices are owned by the
// trainer; policies may modify Params data, Grads and Masks in place at the
// hooks documented to allow it.
type State struct {
	Step         int64   // steps completed before the current one
	Epoch        int     // zero-based epoch of the current step
	SamplesSeen  int64   // training samples consumed before the current step
	Batch        int64   // samples each step consumes
	TotalSamples int64   // samples the whole run will consume
	LR           float64 // learning rate for the current step (set by the LR policy)
	Loss         float64 // task loss of the current step (after the forward pass)
	ExtraLoss    float64 // sum of ExtraLoss contributions of the current step

	Model  *model.Model
	Params [][]float32 // Model.Params' data, same order
	Grads  [][]float32 // gradients of the current step, same order (a data-parallel worker's: current only in the chunk it updates)
	Masks  [][]byte    // per-parameter masks (nil: unmasked); optimizers honour them

	// GuardPauses counts the times an accuracy guard paused a policy.
	GuardPauses int
	// WeightBits is the weight quantization width in force (0: float32).
	WeightBits int
}

// Policy is a compression or training policy attached at hooks. A policy
// implements any of the hook interfaces below.
type Policy interface {
	Name() string
}

// BeforeStepper runs before the forward pass (e.g. recompute masks, set LR).
type BeforeStepper interface {
	BeforeStep(s *State) error
}

// ExtraLosser adds a loss term after the backward pass: it returns the
// term's value and accumulates the term's gradient into s.Grads.
type ExtraLosser interface {
	ExtraLoss(s *State) (float64, error)
}

// AfterUpdater runs after the optimizer's update (e.g. re-apply masks).
type AfterUpdater interface {
	AfterUpdate(s *State) error
}

// EpochEnder runs after each epoch's validation.
type EpochEnder interface {
	EndEpoch(s *State, m EpochMetrics) error
}

// WeightReader is a BeforeStepper that reads or changes State.Params or
// State.Masks at some steps only. Where the parameters live on a device,
// the loop brings them to the host before such a step and sends back what
// the policy changed; other hooks see State.Params current only at epoch
// ends.
type WeightReader interface {
	ReadsWeights(s *State) bool
}
