// Package trainer owns one worker's training: the step (forward, loss,
// gorgonia.Grad, update), the loop (epochs, validation and test evaluation),
// the optimizers, and the hook points where compression policies act
// (BeforeStep, ExtraLoss, AfterUpdate, EndEpoch; DESIGN §3).
//
// A Trainer is not safe for concurrent use. Panics raised by kernels on
// shape bugs are turned into errors at Run's boundary.
package trainer
