package trainer

import (
	"fmt"
	"slices"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/schedule"
)

// PrunePolicy prunes a set of weights during training: at each event of its
// schedule it recomputes their masks from the weights (in this one place),
// zeroes what the masks remove, and leaves the masks in State.Masks, where
// the optimizer holds pruned weights and their optimizer state at zero.
type PrunePolicy struct {
	Label       string
	Layers      []string // weight names, resolved at each event (the model may be rebuilt)
	Schedule    schedule.Sparsity
	Granularity compress.Granularity // Element, a structured one, or NM
	Norm        compress.Norm        // structured ranking
	Global      bool                 // Element: one threshold over all Params
	N, M        int                  // NM
	Logger      hclog.Logger
	// Guard, if set, pauses pruning while validation accuracy is too far
	// below its baseline (checked at each epoch's end).
	Guard *schedule.Guard
	// LayerTargets, when set (by a sensitivity analysis), gives each layer
	// its own final sparsity: the schedule's target is scaled by
	// LayerTargets[layer] / Schedule.Final. Per-layer pruning only.
	LayerTargets map[string]float64

	// Events counts the mask recomputations so far.
	Events int
	// undo holds, per param, the previous mask and the values the last
	// event zeroed, for the guard's undo.
	undo []undoEntry
}

type undoEntry struct {
	Param  int       `json:"param"`
	Mask   []byte    `json:"mask"` // before the event (nil: unmasked)
	Index  []int32   `json:"index"`
	Values []float32 `json:"values"`
}

var (
	_ BeforeStepper = (*PrunePolicy)(nil)
	_ WeightReader  = (*PrunePolicy)(nil)
	_ EpochEnder    = (*PrunePolicy)(nil)
)

// Name implements Policy.
func (p *PrunePolicy) Name() string { return "prune/" + p.Label }

// ReadsWeights implements WeightReader: at the steps with an event.
func (p *PrunePolicy) ReadsWeights(s *State) bool {
	_, ok := p.event(s)
	return ok
}

// event is the schedule's event in this step's samples, if any (none
// while a guard pauses pruning).
func (p *PrunePolicy) event(s *State) (int64, bool) {
	at, ok := p.Schedule.EventIn(s.SamplesSeen, s.SamplesSeen+s.Batch)
	return at, ok && (p.Guard == nil || !p.Guard.Paused)
}

// BeforeStep recomputes the masks when an event falls in this step's samples.
func (p *PrunePolicy) BeforeStep(s *State) error {
	at, ok := p.event(s)
	if !ok {
		return nil
	}
	target := p.Schedule.Target(at)
	if p.Granularity == compress.DependencyGroups || p.Granularity == compress.Heads {
		groups := p.groupMasks
		if p.Granularity == compress.Heads {
			groups = p.headMasks
		}
		params, masks, err := groups(s, target)
		if err != nil {
			return err
		}
		p.setMasks(s, params, masks, at, target)
		return nil
	}
	params, err := s.weightIndices(p.Layers)
	if err != nil {
		return err
	}
	ws := make([]compress.Weight, len(params))
	for k, i := range params {
		prm := s.Model.Params[i]
		ws[k] = compress.Weight{Name: prm.Name, Shape: prm.Shape, Data: s.Params[i]}
	}
	masks := make([][]byte, len(ws))
	switch {
	case p.Granularity == compress.NM:
		for k, w := range ws {
			if masks[k], err = compress.NOfM(w, p.N, p.M); err != nil {
				return err
			}
		}
	case p.Granularity == compress.Element && p.Global:
		masks = compress.GlobalMagnitude(ws, target)
	case p.Granularity == compress.Element:
		for k, w := range ws {
			masks[k] = compress.Magnitude(w, p.layerTarget(w.Name, target))
		}
	default:
		for k, w := range ws {
			if masks[k], err = compress.Structured(w, p.Granularity, p.Norm, p.layerTarget(w.Name, target)); err != nil {
				return err
			}
		}
	}
	p.setMasks(s, params, masks, at, target)
	return nil
}

// setMasks installs an event's masks (keeping what the guard's undo
// needs) and zeroes what they remove. A mask only adds to what the
// parameter's mask already removes: another policy may prune the same
// parameter (a convolution reads one channel group and produces another,
// each pruned by its own policy), and neither may bring back what the
// other removed; a policy's own earlier removals are among its smallest
// anyway (they are zero).
func (p *PrunePolicy) setMasks(s *State, params []int, masks [][]byte, at int64, target float64) {
	p.undo = p.undo[:0]
	for k, i := range params {
		if old := s.Masks[i]; len(old) == len(masks[k]) {
			for j, keep := range old {
				masks[k][j] &= keep
			}
		}
		if p.Guard != nil && p.Guard.Undo {
			e := undoEntry{Param: i, Mask: s.Masks[i]}
			for j, keep := range masks[k] {
				if keep == 0 && s.Params[i][j] != 0 {
					e.Index = append(e.Index, int32(j))
					e.Values = append(e.Values, s.Params[i][j])
				}
			}
			p.undo = append(p.undo, e)
		}
		s.Masks[i] = masks[k]
		compress.Apply(masks[k], s.Params[i])
	}
	p.Events++
	if p.Logger != nil {
		p.Logger.Debug("masks recomputed", "policy", p.Name(), "samples", at, "target", fmt.Sprintf("%.4f", target))
	}
}

// layerTarget scales the schedule's target for one layer.
func (p *PrunePolicy) layerTarget(layer string, target float64) float64 {
	if p.LayerTargets == nil || p.Schedule.Final == 0 {
		return target
	}
	lt := p.LayerTargets[layer] // a layer without a suggestion is not pruned
	return target * lt / p.Schedule.Final
}

// EndEpoch implements EpochEnder: the guard's check.
func (p *PrunePolicy) EndEpoch(s *State, m EpochMetrics) error {
	if p.Guard == nil {
		return nil
	}
	defer func() { p.undo = p.undo[:0] }() // only the epoch's own last step can be undone
	switch p.Guard.Observe(m.ValAccuracy, s.SamplesSeen, p.Schedule.Start) {
	case schedule.GuardPause:
		s.GuardPauses++
		undone := len(p.undo) > 0
		for _, e := range p.undo {
			s.Masks[e.Param] = e.Mask
			for k, j := range e.Index {
				s.Params[e.Param][j] = e.Values[k]
			}
		}
		p.undo = p.undo[:0]
		if p.Logger != nil {
			p.Logger.Warn("pruning paused: validation accuracy below the guard", "policy", p.Name(),
				"val_accuracy", m.ValAccuracy, "baseline", p.Guard.Baseline, "tolerance", p.Guard.Tolerance, "undid_last_step", undone)
		}
	case schedule.GuardResume:
		if p.Logger != nil {
			p.Logger.Info("pruning resumed", "policy", p.Name(), "val_accuracy", m.ValAccuracy, "baseline", p.Guard.Baseline)
		}
	}
	return nil
}

// weightIndices resolves weight names to indices into Model.Params.
func (s *State) weightIndices(names []string) ([]int, error) {
	out := make([]int, len(names))
	for k, name := range names {
		i := slices.IndexFunc(s.Model.Params, func(p *model.Param) bool { return p.Name == name && !p.Bias })
		if i < 0 {
			return nil, fmt.Errorf("trainer: the model has no weight %q (factorized or thinned away?)", name)
		}
		out[k] = i
	}
	return out, nil
}

// WeightSparsity returns each weight's fraction of zeros, in Model.Weights
// order, and the fraction over all of them.
func WeightSparsity(m *model.Model) (per []float64, overall float64) {
	zeros, total := 0, 0
	for _, w := range m.Weights() {
		s := compress.Sparsity(w.Data())
		per = append(per, s)
		zeros += int(s*float64(w.Size()) + 0.5)
		total += w.Size()
	}
	return per, float64(zeros) / float64(total)
}
