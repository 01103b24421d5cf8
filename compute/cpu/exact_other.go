//go:build !amd64

package cpu

const hasExactAsm = false

func chainTile(c, a, b *float32, s *chainShape)            { panic("cpu: no AVX-512 here") }
func dotTile(out *[16]float32, a, b *float32, s *dotShape) { panic("cpu: no AVX-512 here") }
