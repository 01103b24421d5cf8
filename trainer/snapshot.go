package trainer

import (
	"encoding/json"
	"fmt"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// Snapshot is a trainer's complete state between two steps: what a
// checkpoint stores so that a resumed run continues bit for bit.
type Snapshot struct {
	Epoch       int `json:"epoch"`         // zero-based epoch the next step belongs to
	StepInEpoch int `json:"step_in_epoch"` // steps of that epoch already done (the data cursor)
	// EpochStarted says the epoch's start events (factorize, thin) are
	// done: true for snapshots taken inside an epoch.
	EpochStarted bool  `json:"epoch_started"`
	Step         int64 `json:"step"`
	SamplesSeen  int64 `json:"samples_seen"`
	GuardPauses  int   `json:"guard_pauses"`
	WeightBits   int   `json:"weight_bits"`
	// Spec is the architecture at this point (it may have been factorized
	// or thinned since the start).
	Spec model.Spec `json:"spec"`
	// Dropout holds each dropout op's call count (its random stream's
	// position), in the training graph's order. A device draws its masks
	// from the step number instead: Backend names it (empty: the graph).
	Dropout []uint64 `json:"dropout"`
	Backend string   `json:"backend,omitempty"`
	// OptimizerSteps is the optimizer's step count (Adam's bias correction).
	OptimizerSteps int `json:"optimizer_steps"`
	// Quant and ActQuant are the model's quantization controls and
	// activation observers.
	Quant    map[string]model.QuantControl `json:"quant,omitempty"`
	ActQuant map[string]model.Observer     `json:"act_quant,omitempty"`
	// Policies holds each stateful policy's state, by position in the
	// policy list.
	Policies map[int]json.RawMessage `json:"policies,omitempty"`
	History  []EpochMetrics          `json:"history"`
	Ranks    []int                   `json:"ranks,omitempty"`
	// The current epoch's running sums (a mid-epoch snapshot).
	LossSum      float64 `json:"loss_sum"`
	ExtraSum     float64 `json:"extra_sum"`
	KDSum        float64 `json:"kd_sum"`
	Correct      int     `json:"correct"`
	TrainSeconds float64 `json:"train_seconds"` // of the current epoch

	// The tensors, in Model.Params order (not in the JSON: files store
	// them as tensors).
	Params    [][]float32 `json:"-"`
	Masks     [][]byte    `json:"-"`
	Optimizer [][]float32 `json:"-"`
	// A hint's projection and its optimizer (nil without a hint).
	HintProjection     []float32   `json:"-"`
	HintOptimizer      [][]float32 `json:"-"`
	HintOptimizerSteps int         `json:"hint_optimizer_steps,omitempty"`
}

// Stateful is a policy with state of its own to checkpoint.
type Stateful interface {
	SaveState() (json.RawMessage, error)
	LoadState(json.RawMessage) error
}

// running holds the current epoch's sums.
type running struct {
	loss, extra, kd float64
	correct         int
	seconds         float64
}

// snapshot captures the state after stepInEpoch steps of epoch.
func (t *Trainer) snapshot(epoch, stepInEpoch int, res *Result, r running) (*Snapshot, error) {
	s := &t.state
	m := t.cfg.Model
	sn := &Snapshot{Epoch: epoch, StepInEpoch: stepInEpoch, Step: s.Step, SamplesSeen: s.SamplesSeen,
		GuardPauses: s.GuardPauses, WeightBits: s.WeightBits, Spec: m.Spec,
		History: res.Epochs, Ranks: res.Ranks, LossSum: r.loss, ExtraSum: r.extra, KDSum: r.kd, Correct: r.correct,
		TrainSeconds: r.seconds, Params: s.Params, Masks: s.Masks}
	if err := t.be.pull(); err != nil {
		return nil, err
	}
	if err := t.be.save(sn); err != nil {
		return nil, err
	}
	if len(m.Quant) > 0 {
		sn.Quant = map[string]model.QuantControl{}
		for k, c := range m.Quant {
			sn.Quant[k] = *c
		}
	}
	if len(m.ActQuant) > 0 {
		sn.ActQuant = map[string]model.Observer{}
		for k, o := range m.ActQuant {
			sn.ActQuant[k] = *o
		}
	}
	for i, p := range t.cfg.Policies {
		if sp, ok := p.(Stateful); ok {
			raw, err := sp.SaveState()
			if err != nil {
				return nil, fmt.Errorf("trainer: checkpoint %s: %w", p.Name(), err)
			}
			if sn.Policies == nil {
				sn.Policies = map[int]json.RawMessage{}
			}
			sn.Policies[i] = raw
		}
	}
	return sn, nil
}

// restore puts a snapshot's state into a trainer built for the snapshot's
// architecture (its Model already holds the snapshot's parameters).
func (t *Trainer) restore(sn *Snapshot) error {
	s := &t.state
	m := t.cfg.Model
	if len(sn.Masks) != len(m.Params) {
		return fmt.Errorf("trainer: resume: %d masks for %d parameters", len(sn.Masks), len(m.Params))
	}
	for i, p := range m.Params {
		if sn.Masks[i] != nil && len(sn.Masks[i]) != p.Size() {
			return fmt.Errorf("trainer: resume: mask of %s has %d elements, want %d", p.Name, len(sn.Masks[i]), p.Size())
		}
	}
	s.Step, s.SamplesSeen, s.GuardPauses, s.WeightBits, s.Epoch = sn.Step, sn.SamplesSeen, sn.GuardPauses, sn.WeightBits, sn.Epoch
	copy(s.Masks, sn.Masks)
	for k, c := range sn.Quant {
		if m.Quant == nil {
			m.Quant = map[string]*model.QuantControl{}
		}
		if m.Quant[k] == nil {
			m.Quant[k] = &model.QuantControl{}
		}
		*m.Quant[k] = c
	}
	for k, o := range sn.ActQuant {
		if m.ActQuant[k] == nil {
			return fmt.Errorf("trainer: resume: the model has no activation observer for %q", k)
		}
		*m.ActQuant[k] = o
	}
	for i, p := range t.cfg.Policies {
		sp, ok := p.(Stateful)
		raw, have := sn.Policies[i]
		if ok != have {
			return fmt.Errorf("trainer: resume: the policies differ from the checkpoint's at %d (%s)", i, p.Name())
		}
		if ok {
			if err := sp.LoadState(raw); err != nil {
				return fmt.Errorf("trainer: resume %s: %w", p.Name(), err)
			}
		}
	}
	if err := t.be.restore(sn); err != nil {
		return err
	}
	t.resume = sn
	return nil
}

// SaveState implements Stateful.
func (p *PrunePolicy) SaveState() (json.RawMessage, error) {
	return json.Marshal(pruneState{Events: p.Events, Guard: p.Guard, LayerTargets: p.LayerTargets, Undo: p.undo})
}

// LoadState implements Stateful.
func (p *PrunePolicy) LoadState(raw json.RawMessage) error {
	var st pruneState
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	p.Events, p.LayerTargets, p.undo = st.Events, st.LayerTargets, st.Undo
	if (st.Guard == nil) != (p.Guard == nil) {
		return fmt.Errorf("guard present in only one of the recipe and the checkpoint")
	}
	if p.Guard != nil {
		*p.Guard = *st.Guard
	}
	return nil
}

type pruneState struct {
	Events       int                `json:"events"`
	Guard        *schedule.Guard    `json:"guard,omitempty"`
	LayerTargets map[string]float64 `json:"layer_targets,omitempty"`
	Undo         []undoEntry        `json:"undo,omitempty"`
}
