// Package model owns lathe's model zoo as gorgonia graphs and the parameter
// registry: every weight has a name (fc1, conv2, …), a shape and its prunable
// groups (rows, columns, filters, channels).
//
// The graphs are built from project ops (ops.go) rather than gorgonia's stock
// ops: a fused linear + bias + ReLU, a convolution through im2col and one
// GEMM, max-pooling, dropout and a fused softmax cross-entropy. Each op owns
// its output buffer, reused across steps, and dispatches its GEMMs through a
// compute.Engine. What stays gorgonia: building the graph, symbolic
// differentiation (gorgonia.Grad) and execution by the TapeMachine.
//
// Layouts: activations are row-major [batch, features]; convolutional
// activations are NHWC flattened to [batch, H·W·C]. Linear weights are
// [out, in] (a row per neuron), convolution weights [filters, channels, k, k].
package model
