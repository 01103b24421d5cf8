package cpu

import "golang.org/x/sys/cpu"

// hasExactAsm says whether the exact product's AVX-512 kernels run here
// (the Go loops elsewhere; both give the same bits).
var hasExactAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL

// hasExactAVX2 says whether the AVX2 forms run where AVX-512 does not.
var hasExactAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

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

// chainTile2 is chainTile with AVX2 over a panel of sixteen columns, B's
// row loaded under masks (all ones on the panel's columns).
//
//go:noescape
func chainTile2(c, a, b *float32, s *chainShape, masks *[16]int32)

// dotTile2 is dotTile with AVX2 for two rows of A against two of B (s's
// rows 2 and 3 unused), the last block loaded under tail.
//
//go:noescape
func dotTile2(out *[4]float32, a, b *float32, s *dotShape, tail *[16]int32)
