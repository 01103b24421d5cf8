package trainer

import (
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/regularizers"
)

// RegularizePolicy adds a penalty on a set of weights while training is
// inside its window [Start, End) in samples (End 0: to the end): group
// lasso and L1 as proximal steps after each update (so that groups and
// weights reach exactly zero), L2 as a gradient term. The penalty's value
// is reported as extra loss.
type RegularizePolicy struct {
	Kind        string   // "group_lasso", "l1", "l2"
	Layers      []string // weight names
	Granularity compress.Granularity
	Strength    float64
	// FinalStrength, when ≥ 0 and End > Start, ramps the strength linearly
	// from Strength at Start to FinalStrength at End; < 0 keeps it constant.
	FinalStrength float64
	Start, End    int64

	// ZeroGroups is how many groups the last group-lasso step left at zero.
	ZeroGroups int
}

var (
	_ ExtraLosser  = (*RegularizePolicy)(nil)
	_ AfterUpdater = (*RegularizePolicy)(nil)
)

// Name implements Policy.
func (p *RegularizePolicy) Name() string { return "regularize/" + p.Kind }

func (p *RegularizePolicy) active(s *State) bool {
	return s.SamplesSeen >= p.Start && (p.End == 0 || s.SamplesSeen < p.End)
}

// strength is λ after seen samples.
func (p *RegularizePolicy) strength(seen int64) float64 {
	if p.FinalStrength < 0 || p.End <= p.Start {
		return p.Strength
	}
	f := float64(seen-p.Start) / float64(p.End-p.Start)
	return p.Strength + (p.FinalStrength-p.Strength)*min(max(f, 0), 1)
}

func (p *RegularizePolicy) weight(s *State, i int) compress.Weight {
	prm := s.Model.Params[i]
	return compress.Weight{Name: prm.Name, Shape: prm.Shape, Data: s.Params[i]}
}

// ExtraLoss implements ExtraLosser.
func (p *RegularizePolicy) ExtraLoss(s *State) (float64, error) {
	if !p.active(s) {
		return 0, nil
	}
	params, err := s.weightIndices(p.Layers)
	if err != nil {
		return 0, err
	}
	var total float64
	lambda := p.strength(s.SamplesSeen)
	for _, i := range params {
		switch p.Kind {
		case "l2":
			total += regularizers.L2Grad(s.Grads[i], s.Params[i], lambda)
		case "l1":
			total += lambda * regularizers.L1Penalty(s.Params[i])
		default:
			v, err := regularizers.GroupLassoPenalty(p.weight(s, i), p.Granularity)
			if err != nil {
				return 0, err
			}
			total += lambda * v
		}
	}
	return total, nil
}

// AfterUpdate implements AfterUpdater: the proximal step.
func (p *RegularizePolicy) AfterUpdate(s *State) error {
	if !p.active(s) || p.Kind == "l2" {
		return nil
	}
	params, err := s.weightIndices(p.Layers)
	if err != nil {
		return err
	}
	t := s.LR * p.strength(s.SamplesSeen)
	zero := 0
	for _, i := range params {
		if p.Kind == "l1" {
			regularizers.L1Prox(s.Params[i], t)
			continue
		}
		z, err := regularizers.GroupLassoProx(p.weight(s, i), p.Granularity, t)
		if err != nil {
			return err
		}
		zero += z
	}
	p.ZeroGroups = zero
	return nil
}
