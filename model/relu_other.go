//go:build !amd64

package model

const hasAVX2 = false

func reluGradAcc8(dst, y, dy, acc *float32, n int) { panic("model: no AVX2 here") }
