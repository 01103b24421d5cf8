// Package compute owns the tensor engines that lathe's gorgonia graphs run on.
//
// An Engine is the small set of kernels that project ops dispatch through
// (today: single-precision GEMM and a parallel-for). Implementations live in
// sub-packages — compute/cpu (OpenBLAS loaded at run time, gonum fallback) —
// and every implementation runs the shared suite in compute/enginetest.
//
// All matrices are row-major float32 slices; leading dimensions count
// elements. Kernels panic on shape bugs (a slice too short for the stated
// dimensions); the trainer turns such panics into errors at one boundary.
package compute
