package model

import "golang.org/x/sys/cpu"

// hasAVX2 says whether the AVX2 form of the ReLU-gradient pass runs here
// (the Go loops elsewhere; both give the same bits).
var hasAVX2 = cpu.X86.HasAVX2

//go:noescape
func reluGradAcc8(dst, y, dy, acc *float32, n int)
