// Package distill owns knowledge distillation: Hinton's loss (softened
// softmax at temperature T, KL divergence scaled by T², blended with the
// task's cross-entropy by alpha) as a gorgonia op whose gradient flows to
// the student only, and teacher ensembles (the mean of several teachers'
// logits).
package distill
