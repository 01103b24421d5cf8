package kernels

import "golang.org/x/sys/cpu"

// hasDirect says whether the AVX-512 direct convolution kernel runs here.
var hasDirect = cpu.X86.HasAVX512F

// convTile accumulates one tile: 8 output pixels (pixStride bytes apart
// in the padded input, rows rowStride bytes apart) × 32 channels, over k×k
// taps of c channels, filters w [k][k][c][32]; out [8][32].
//
//go:noescape
func convTile(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32)

// convTile16 is convTile for 16 pixels × 16 channels: filters [k][k][c][16],
// out [16][16].
//
//go:noescape
func convTile16(x *float32, pixStride, rowStride, c, k int, w *float32, out *float32)
