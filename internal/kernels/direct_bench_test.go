package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkDirectConv: the direct kernel on ResNet-20's 3×3 layers, one
// image (padding included), one thread.
func BenchmarkDirectConv(b *testing.B) {
	for _, g := range []struct {
		win Window
		out int
	}{
		{Window{H: 28, W: 28, C: 16, K: 3, Stride: 1, Pad: 1}, 16},
		{Window{H: 14, W: 14, C: 32, K: 3, Stride: 1, Pad: 1}, 32},
		{Window{H: 7, W: 7, C: 64, K: 3, Stride: 1, Pad: 1}, 64},
	} {
		b.Run(fmt.Sprintf("%dx%dx%d-%d", g.win.H, g.win.W, g.win.C, g.out), func(b *testing.B) {
			oh, ow := g.win.Out()
			x := make([]float32, g.win.H*g.win.W*g.win.C)
			d := NewDirectConv(g.win, g.out, make([]float32, g.out*9*g.win.C), nil, ActReLU)
			padded := make([]float32, d.PaddedLen())
			y := make([]float32, oh*ow*g.out)
			var tile DirectTile
			b.SetBytes(int64(oh * ow * g.out * 9 * g.win.C * 2)) // FLOPs, as "bytes"
			for b.Loop() {
				d.Pad(padded, x)
				for oy := range oh {
					d.Row(y[oy*ow*g.out:], padded, oy, &tile)
				}
			}
		})
	}
}
