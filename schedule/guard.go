package schedule

// Guard pauses a compression schedule while validation accuracy is more than
// Tolerance below the baseline — the validation accuracy measured at the last
// evaluation before the schedule's window starts — and resumes it when the
// accuracy recovers. Its exported fields are training state (a resumed run
// needs them).
type Guard struct {
	Tolerance float64 // fraction, e.g. 0.005 for half a point
	Undo      bool    // also undo the last compression step when pausing

	Baseline     float64
	HaveBaseline bool
	Paused       bool
	Pauses       int // times the guard paused
}

// GuardEvent is what an observation decided.
type GuardEvent int

const (
	GuardNone GuardEvent = iota
	GuardPause
	GuardResume
	GuardBaseline // the baseline was (re)set
)

// Observe takes a validation accuracy measured after seen samples, for a
// schedule whose window starts at start.
func (g *Guard) Observe(valAcc float64, seen, start int64) GuardEvent {
	if seen <= start || !g.HaveBaseline {
		// Evaluations up to the window's start set the baseline (the latest
		// wins); a window that starts before any evaluation takes the first.
		g.Baseline, g.HaveBaseline = valAcc, true
		return GuardBaseline
	}
	switch low := valAcc < g.Baseline-g.Tolerance; {
	case low && !g.Paused:
		g.Paused = true
		g.Pauses++
		return GuardPause
	case !low && g.Paused:
		g.Paused = false
		return GuardResume
	}
	return GuardNone
}
