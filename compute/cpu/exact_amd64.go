package cpu

import "golang.org/x/sys/cpu"

// hasExactAsm says whether the exact product's AVX-512 kernels run here
// (the Go loops elsewhere; both give the same bits).
var hasExactAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL

// chainTile computes four rows by sixty-four columns of the op(B) = B
// order into c (exact.go): rows and lanes past the shape's are not stored.
//
//go:noescape
func chainTile(c, a, b *float32, s *chainShape)

// dotTile computes four rows of A against four rows of B in the
// op(B) = Bᵀ order into out, row-major.
//
//go:noescape
func dotTile(out *[16]float32, a, b *float32, s *dotShape)
