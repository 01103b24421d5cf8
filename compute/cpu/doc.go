// Package cpu is lathe's CPU engine: float32 GEMM through OpenBLAS, loaded at
// run time with purego (no cgo), falling back to gonum's pure-Go BLAS with a
// warning when OpenBLAS cannot be loaded.
//
// Debian's OpenBLAS 0.3.21 misdetects recent Xeons as "Prescott" and runs
// about ten times too slow, so before loading it the engine sets
// OPENBLAS_CORETYPE from the CPU's features (AVX-512 → SkylakeX, AVX2 →
// Haswell) unless the variable is already set, and shortens the time its idle
// threads spin (OPENBLAS_THREAD_TIMEOUT) so that they leave the cores to the
// Go kernels between GEMMs. The library is loaded once per process; its
// thread count is process-wide, and Sgemm sets it per product (see there).
package cpu
