package schedule

import (
	"fmt"
	"math"
	"slices"
)

// SparsityKinds are the sparsity schedules a recipe can name.
var SparsityKinds = []string{"agp", "polynomial", "linear", "one_shot", "iterative"}

// Sparsity is a pruning schedule: when masks are recomputed and the
// fraction of weights pruned at each of those events. Positions are in
// samples seen, so the schedule does not bend when the batch size or the
// worker count changes.
//
// Events fall at Start, Start+Every, Start+2·Every, … up to End (End is
// always an event). At an event at sample t the target is:
//
//	agp         Final + (Initial − Final)·(1 − p)³, p = (t − Start)/(End − Start)
//	            (Zhu & Gupta's automated gradual pruning)
//	polynomial  the same with exponent Power
//	linear      exponent 1
//	one_shot    Final, at a single event at Start
//	iterative   each event removes the same fraction of the weights still
//	            kept: kept = (1 − Initial)·((1 − Final)/(1 − Initial))^p
type Sparsity struct {
	Kind           string
	Initial, Final float64
	Power          float64 // polynomial only
	Start, End     int64   // samples; End ≥ Start (one_shot ignores End)
	Every          int64   // samples between events; > 0 unless one_shot
}

// Validate reports a schedule lathe cannot follow.
func (s Sparsity) Validate() error {
	switch {
	case !slices.Contains(SparsityKinds, s.Kind):
		return fmt.Errorf("schedule: unknown sparsity schedule %q (agp, polynomial, linear, one_shot, iterative)", s.Kind)
	case !(s.Final >= 0 && s.Final < 1):
		return fmt.Errorf("schedule: target sparsity %v outside [0, 1)", s.Final)
	case !(s.Initial >= 0 && s.Initial <= s.Final):
		return fmt.Errorf("schedule: initial sparsity %v outside [0, target %v]", s.Initial, s.Final)
	case s.Start < 0:
		return fmt.Errorf("schedule: pruning starts at %d samples", s.Start)
	case s.Kind != "one_shot" && s.End < s.Start:
		return fmt.Errorf("schedule: pruning window ends (%d samples) before it starts (%d)", s.End, s.Start)
	case s.Kind != "one_shot" && s.Every <= 0:
		return fmt.Errorf("schedule: pruning frequency must be positive")
	case s.Kind == "polynomial" && !(s.Power > 0):
		return fmt.Errorf("schedule: polynomial power %v must be positive", s.Power)
	}
	return nil
}

// Target returns the sparsity an event at sample t prunes to.
func (s Sparsity) Target(t int64) float64 {
	if s.Kind == "one_shot" || t >= s.End {
		return s.Final
	}
	if t <= s.Start {
		return s.Initial
	}
	p := float64(t-s.Start) / float64(s.End-s.Start)
	switch s.Kind {
	case "iterative":
		kept := (1 - s.Initial) * math.Pow((1-s.Final)/(1-s.Initial), p)
		return 1 - kept
	case "linear":
		return s.Final + (s.Initial-s.Final)*(1-p)
	case "polynomial":
		return s.Final + (s.Initial-s.Final)*math.Pow(1-p, s.Power)
	}
	return s.Final + (s.Initial-s.Final)*math.Pow(1-p, 3) // agp
}

// EventIn reports whether an event falls in the samples [from, to) — the
// samples one step consumes — and the event's position (the last one, if
// a step spans several).
func (s Sparsity) EventIn(from, to int64) (int64, bool) {
	if s.Kind == "one_shot" {
		return s.Start, s.Start >= from && s.Start < to
	}
	if to <= s.Start || from > s.End {
		return 0, false
	}
	// The last event before to: Start + k·Every, capped by End.
	last := to - 1
	if last >= s.End {
		last = s.End
	} else {
		last = s.Start + (last-s.Start)/s.Every*s.Every
	}
	if last < from {
		return 0, false
	}
	return last, true
}
