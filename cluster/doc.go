// Package cluster spreads a training job over workers through NATS
// (DESIGN §6): an embedded nats-server by default, the subjects and
// messages of the protocol, the coordinator's membership (registration,
// heartbeats, generations), and the exact data-parallel reduction every
// replica steps with, whose chunks' owners apply the optimizer update.
//
// Subjects, for a job J (its name with '.', '*', '>' and blanks replaced):
//
//	lathe.J.c.ctl              coordinator → all: phase, generation, join, task, end, stop, register
//	lathe.J.c.coordinator.at   the coordinator's completed steps (workers stay within Window of it)
//	lathe.J.w.W.join           worker W registers (request)
//	lathe.J.w.W.hb             worker W's heartbeat
//	lathe.J.w.W.rs.O           W's partial sums of owner O's chunk (reduce-scatter)
//	lathe.J.w.W.ag             W's reduced chunk, read by the coordinator (it applies the whole update)
//	lathe.J.w.W.wg             W's chunk of parameters after W's update of it (all-gather, read by the workers)
//	lathe.J.w.W.resend.T       W asks T to publish a message again (request; the coordinator asks as lathe.J.c.coordinator.resend.T)
//	lathe.J.w.W.fetch          W asks any replica for a whole completed step (request)
//	lathe.J.w.W.moments        W asks the coordinator for the optimizer state of a chunk it takes over (request)
//	lathe.J.w.W.done           W's result of a job-parallel task
//	lathe.J.w.W.shared         W asks for a value the coordinator decided for the phase (request)
//
// A worker publishes only under lathe.J.w.<its name>, so a deployment can
// grant each worker's credentials exactly that — and, for the job's
// files, reading the job's JetStream object store, plus writing its
// task-<id>/ objects where it runs job-parallel tasks; the sender of a
// message is the subject's fourth token. Every data message carries the job, the
// phase, the membership generation and the step in its headers, and is
// rejected (and counted) when any of them is foreign or stale (a step
// already reduced, a generation no longer kept), when its
// shape is not the expected one, or when it holds NaN or Inf.
package cluster
