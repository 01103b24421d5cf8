package trainer

import (
	"fmt"

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
	Params      []int // indices into Model.Params (weights only)
	Schedule    schedule.Sparsity
	Granularity compress.Granularity // Element, a structured one, or NM
	Norm        compress.Norm        // structured ranking
	Global      bool                 // Element: one threshold over all Params
	N, M        int                  // NM
	Logger      hclog.Logger

	// Events counts the mask recomputations so far.
	Events int
}

var (
	_ BeforeStepper = (*PrunePolicy)(nil)
)

// Name implements Policy.
func (p *PrunePolicy) Name() string { return "prune/" + p.Label }

// BeforeStep recomputes the masks when an event falls in this step's samples.
func (p *PrunePolicy) BeforeStep(s *State) error {
	at, ok := p.Schedule.EventIn(s.SamplesSeen, s.SamplesSeen+s.Batch)
	if !ok {
		return nil
	}
	target := p.Schedule.Target(at)
	ws := make([]compress.Weight, len(p.Params))
	for k, i := range p.Params {
		prm := s.Model.Params[i]
		ws[k] = compress.Weight{Name: prm.Name, Shape: prm.Shape, Data: s.Params[i]}
	}
	masks := make([][]byte, len(ws))
	var err error
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
			masks[k] = compress.Magnitude(w, target)
		}
	default:
		for k, w := range ws {
			if masks[k], err = compress.Structured(w, p.Granularity, p.Norm, target); err != nil {
				return err
			}
		}
	}
	for k, i := range p.Params {
		s.Masks[i] = masks[k]
		compress.Apply(masks[k], s.Params[i])
	}
	p.Events++
	if p.Logger != nil {
		p.Logger.Debug("masks recomputed", "policy", p.Name(), "samples", at, "target", fmt.Sprintf("%.4f", target))
	}
	return nil
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
