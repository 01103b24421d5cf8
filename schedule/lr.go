package schedule

import (
	"fmt"
	"math"
	"slices"
)

// LR kinds.
var LRKinds = []string{"constant", "step", "cosine"}

// LR is a learning-rate schedule. All positions are in samples seen.
type LR struct {
	Kind   string  // "constant", "step" or "cosine"
	Base   float64 // the rate after warm-up
	Min    float64 // cosine's floor
	Warmup int64   // linear warm-up from Base/Warmup·1 sample to Base over this many samples
	Total  int64   // the run's length (cosine decays to Min at Total)
	Every  int64   // step: multiply by Gamma every this many samples (after warm-up)
	Gamma  float64 // step's factor
}

// Validate reports a schedule that cannot be evaluated.
func (s LR) Validate() error {
	switch {
	case !slices.Contains(LRKinds, s.Kind):
		return fmt.Errorf("schedule: unknown lr schedule %q (constant, step, cosine)", s.Kind)
	case !(s.Base > 0):
		return fmt.Errorf("schedule: lr %v must be positive", s.Base)
	case s.Min < 0 || s.Min > s.Base:
		return fmt.Errorf("schedule: min lr %v outside [0, lr]", s.Min)
	case s.Warmup < 0 || s.Total <= 0:
		return fmt.Errorf("schedule: warm-up %d and total %d samples", s.Warmup, s.Total)
	case s.Kind == "step" && (s.Every <= 0 || !(s.Gamma > 0 && s.Gamma <= 1)):
		return fmt.Errorf("schedule: step schedule needs every > 0 and gamma in (0, 1]")
	}
	return nil
}

// At returns the learning rate after seen samples.
func (s LR) At(seen int64) float64 {
	if s.Warmup > 0 && seen < s.Warmup {
		return s.Base * float64(seen+1) / float64(s.Warmup)
	}
	switch s.Kind {
	case "step":
		return s.Base * math.Pow(s.Gamma, float64((seen-s.Warmup)/s.Every))
	case "cosine":
		span := s.Total - s.Warmup
		if span <= 0 {
			return s.Base
		}
		p := min(float64(seen-s.Warmup)/float64(span), 1)
		return s.Min + (s.Base-s.Min)*0.5*(1+math.Cos(math.Pi*p))
	}
	return s.Base
}
