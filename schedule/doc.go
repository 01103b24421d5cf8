// Package schedule owns the "when" of training: schedules that are pure
// functions of progress counted in samples seen, so that changing the worker
// count or the batch size does not bend them. Today it holds learning-rate
// schedules; sparsity and bit-width schedules join them.
package schedule
