package compress

import "golang.org/x/sys/cpu"

// hasAVX2 says whether the AVX2 forms of the range and fake-quantization
// passes run here (the Go loops run elsewhere; both give the same bits).
var hasAVX2 = cpu.X86.HasAVX2

//go:noescape
func minMax8(x *float32, n int, out *[16]float32)

//go:noescape
func fakeQuant8(dst, src *float32, n int, inv, sc, zf float32, out *[16]float32)
