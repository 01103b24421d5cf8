//go:build !amd64

package cpu

var hasExactAsm, hasExactAVX2 = false, false

func chainTile(c, a, b *float32, s *chainShape)            { panic("cpu: no AVX-512 here") }
func dotTile(out *[16]float32, a, b *float32, s *dotShape) { panic("cpu: no AVX-512 here") }

func chainTile2(c, a, b *float32, s *chainShape, masks *[16]int32) { panic("cpu: no AVX2 here") }
func dotTile2(out *[4]float32, a, b *float32, s *dotShape, tail *[16]int32) {
	panic("cpu: no AVX2 here")
}
