package model

import "golang.org/x/sys/cpu"

// hasBNAsm says whether the batch norm's AVX-512 passes run here (the Go
// loops elsewhere; both give the same bits).
var hasBNAsm = cpu.X86.HasAVX512F

//go:noescape
func bnSums(x *float32, stride, n, w int, sum, ss *float64)

//go:noescape
func bnNorm(x, xhat, y *float32, rows, c int, mu, inv, gam, bet *float32, act int)

//go:noescape
func bnGradApply(dz, x, dx *float32, rows, c int, n float64, kk, sb, sg *float64, mu, inv *float32)

//go:noescape
func bnGradSums(dz, x *float32, stride, n, w int, mu, inv *float32, sb, sg *float64)

//go:noescape
func actGradMask(y, dy, dz *float32, n int, hi float32)
