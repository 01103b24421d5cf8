package trainer

import (
	"fmt"
	"slices"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compress"
)

// SensitivityRow is one cell of a sensitivity table: a layer pruned alone
// (magnitude, per layer) to a sparsity, and the validation accuracy then.
type SensitivityRow struct {
	Layer    string  `json:"layer"`
	Sparsity float64 `json:"sparsity"`
	Accuracy float64 `json:"val_accuracy"`
}

// SensitivityTable is a sensitivity analysis: the baseline accuracy, the
// table, and per layer the largest sparsity tried whose accuracy stayed
// within Tolerance of the baseline (0 when none did).
type SensitivityTable struct {
	Epoch     int                `json:"epoch"`
	Baseline  float64            `json:"baseline_val_accuracy"`
	Tolerance float64            `json:"tolerance"`
	Rows      []SensitivityRow   `json:"rows"`
	Suggested map[string]float64 `json:"suggested_targets"`
}

// SensitivityPolicy runs a sensitivity analysis at the end of epoch Epoch
// (1-based): each layer alone is pruned to each sparsity, evaluated on the
// validation split (never the test split), and restored. The suggestions
// become per-layer targets of the prune policies in Feed.
type SensitivityPolicy struct {
	Layers     []string
	Sparsities []float64
	Tolerance  float64
	Epoch      int
	// Evaluate returns validation accuracy of the current weights; Write
	// stores the table. Both are set by whoever builds the trainer.
	Evaluate func() (float64, error)
	Write    func(SensitivityTable) error
	// EvaluateAll, when set, replaces Evaluate: it evaluates every cell
	// at once (a cluster hands them to its workers) — the weights as they
	// are, then each cell's layer pruned alone to its sparsity — and
	// returns the first accuracy, which becomes the baseline, and one per
	// cell, in order.
	EvaluateAll func(cells []SensitivityRow) (baseline float64, accs []float64, err error)
	Feed        []*PrunePolicy
	Logger      hclog.Logger

	Table *SensitivityTable
}

var _ EpochEnder = (*SensitivityPolicy)(nil)

// Name implements Policy.
func (p *SensitivityPolicy) Name() string { return "sensitivity" }

// EndEpoch implements EpochEnder.
func (p *SensitivityPolicy) EndEpoch(s *State, m EpochMetrics) error {
	if m.Epoch != p.Epoch {
		return nil
	}
	if p.Evaluate == nil && p.EvaluateAll == nil {
		return fmt.Errorf("trainer: sensitivity: no evaluation set up")
	}
	params, err := s.weightIndices(p.Layers)
	if err != nil {
		return err
	}
	t := &SensitivityTable{Epoch: m.Epoch, Baseline: m.ValAccuracy, Tolerance: p.Tolerance, Suggested: map[string]float64{}}
	if p.EvaluateAll != nil {
		for _, name := range p.Layers {
			for _, sp := range p.Sparsities {
				t.Rows = append(t.Rows, SensitivityRow{Layer: name, Sparsity: sp})
			}
		}
		base, accs, err := p.EvaluateAll(t.Rows)
		if err != nil {
			return err
		}
		if len(accs) != len(t.Rows) {
			return fmt.Errorf("trainer: sensitivity: %d accuracies for %d cells", len(accs), len(t.Rows))
		}
		t.Baseline = base
		for i := range t.Rows {
			t.Rows[i].Accuracy = accs[i]
		}
		for _, name := range p.Layers {
			t.Suggested[name] = 0
			for _, r := range t.Rows {
				if r.Layer == name && r.Accuracy >= t.Baseline-p.Tolerance && r.Sparsity > t.Suggested[name] {
					t.Suggested[name] = r.Sparsity
				}
			}
			if p.Logger != nil {
				p.Logger.Info("sensitivity", "layer", name, "suggested_target", t.Suggested[name])
			}
		}
		return p.finish(t)
	}
	for k, i := range params {
		name := p.Layers[k]
		t.Suggested[name] = 0 // no sparsity tried kept the accuracy: do not prune it
		saved := slices.Clone(s.Params[i])
		w := compress.Weight{Name: name, Shape: s.Model.Params[i].Shape, Data: s.Params[i]}
		for _, sp := range p.Sparsities {
			compress.Apply(compress.Magnitude(w, sp), s.Params[i])
			acc, err := p.Evaluate()
			copy(s.Params[i], saved)
			if err != nil {
				return err
			}
			t.Rows = append(t.Rows, SensitivityRow{Layer: name, Sparsity: sp, Accuracy: acc})
			if acc >= t.Baseline-p.Tolerance && sp > t.Suggested[name] {
				t.Suggested[name] = sp
			}
		}
		if p.Logger != nil {
			p.Logger.Info("sensitivity", "layer", name, "suggested_target", t.Suggested[name])
		}
	}
	return p.finish(t)
}

// finish keeps the table, feeds its suggestions to the prune policies and
// writes it.
func (p *SensitivityPolicy) finish(t *SensitivityTable) error {
	p.Table = t
	for _, pp := range p.Feed {
		pp.LayerTargets = t.Suggested
	}
	if p.Write != nil {
		return p.Write(*t)
	}
	return nil
}
