package trainer

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// QuantStep is one width of a quantization schedule: from sample Start on,
// weights are fake-quantized to Bits.
type QuantStep struct {
	Start int64
	Bits  int
}

// QuantPolicy turns quantization-aware training on and tightens the bit
// width on its schedule (gradual quantization, e.g. 8 → 6 → 4): before each
// step it sets the shared controls of its layers (Model.Quant), which every
// graph built from the model reads. LayerBits pins a layer's width (mixed
// precision) once quantization is on.
type QuantPolicy struct {
	Layers    []string
	Steps     []QuantStep // by Start, ascending
	LayerBits map[string]int
	// Observers names the layers whose activations are quantized (their
	// observers in Model.ActQuant): on with the weights, frozen from sample
	// FreezeAt on (0: never).
	Observers []string
	FreezeAt  int64
	// FreezeBNAt is the sample from which the model's batch norms
	// normalize by their running statistics and stop updating them
	// (Model.BN; 0: never).
	FreezeBNAt int64
	Logger     hclog.Logger

	current int // bits in force (0: off), for logging changes
}

var _ BeforeStepper = (*QuantPolicy)(nil)

// Name implements Policy.
func (p *QuantPolicy) Name() string { return "quantize" }

// BeforeStep implements BeforeStepper.
func (p *QuantPolicy) BeforeStep(s *State) error {
	bits := 0
	for _, st := range p.Steps {
		if s.SamplesSeen >= st.Start {
			bits = st.Bits
		}
	}
	for _, name := range p.Layers {
		ctl := s.Model.Quant[name]
		if ctl == nil {
			return fmt.Errorf("trainer: quantize: the model has no quantization control for %q", name)
		}
		ctl.Enabled = bits > 0
		if lb, ok := p.LayerBits[name]; ok && bits > 0 {
			ctl.Spec.Bits = lb
		} else if bits > 0 {
			ctl.Spec.Bits = bits
		}
	}
	for _, name := range p.Observers {
		obs := s.Model.ActQuant[name]
		if obs == nil {
			return fmt.Errorf("trainer: quantize: the model has no activation observer for %q", name)
		}
		obs.Enabled = bits > 0
		obs.Frozen = p.FreezeAt > 0 && s.SamplesSeen >= p.FreezeAt
	}
	if ctl := s.Model.BN; ctl != nil {
		frozen := p.FreezeBNAt > 0 && s.SamplesSeen >= p.FreezeBNAt
		if frozen && !ctl.Frozen && p.Logger != nil {
			p.Logger.Info("batch norm statistics frozen", "samples", s.SamplesSeen)
		}
		ctl.Frozen = frozen
	}
	if bits != p.current && p.Logger != nil {
		p.Logger.Info("weight quantization", "bits", bits, "samples", s.SamplesSeen)
	}
	p.current = bits
	s.WeightBits = bits
	return nil
}
