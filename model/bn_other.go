//go:build !amd64

package model

const hasBNAsm = false

func bnSums(x *float32, stride, n, w int, sum, ss *float64) { panic("model: no AVX-512 here") }

func bnNorm(x, xhat, y *float32, rows, c int, mu, inv, gam, bet *float32, act int) {
	panic("model: no AVX-512 here")
}

func bnGradApply(dz, x, dx *float32, rows, c int, n float64, kk, sb, sg *float64, mu, inv *float32) {
	panic("model: no AVX-512 here")
}

func bnGradSums(dz, x *float32, stride, n, w int, mu, inv *float32, sb, sg *float64) {
	panic("model: no AVX-512 here")
}

func actGradMask(y, dy, dz *float32, n int, hi float32) { panic("model: no AVX-512 here") }
