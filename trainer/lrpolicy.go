package trainer

import "github.com/lathe-ml/lathe/schedule"

// LRPolicy sets the learning rate before every step from a schedule.
type LRPolicy struct{ Schedule schedule.LR }

var _ BeforeStepper = (*LRPolicy)(nil)

func (p *LRPolicy) Name() string { return "lr/" + p.Schedule.Kind }

func (p *LRPolicy) BeforeStep(s *State) error {
	s.LR = p.Schedule.At(s.SamplesSeen)
	return nil
}
