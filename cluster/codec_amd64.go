package cluster

import "golang.org/x/sys/cpu"

// hasVBMI says whether the narrow codec's AVX-512 forms run here: eight
// values a block, their bytes moved by one VPERMB (the Go loops elsewhere;
// both give the same bytes and values).
var hasVBMI = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VBMI

// hasAVX2 says whether decodeFloat32s checks and copies eight values at a
// time (copyFinite8), and the narrow codec's AVX2 forms run where AVX-512
// VBMI does not (four values a block).
var hasAVX2 = cpu.X86.HasAVX2

// copyFinite copies b's little-endian float32s into v (its length) eight
// at a time while they are finite, and returns how many it copied: whole
// blocks of eight, up to the first block with a NaN or an Inf; the rest
// is the caller's.
func copyFinite(v []float32, b []byte) int {
	if !hasAVX2 || len(v) < 8 || len(b) < 4*len(v) {
		return 0
	}
	return 8 * copyFinite8(&v[0], &b[0], len(v)/8)
}

// copyFinite8 copies blocks of eight little-endian float32s from src to
// dst, stopping before the first block with a NaN or an Inf; it returns
// the blocks copied.
//
//go:noescape
func copyFinite8(dst *float32, src *byte, blocks int) int

// foldInt64s16 ORs x ^ (x >> 63) over v[:16·blocks].
//
//go:noescape
func foldInt64s16(v *int64, blocks int) uint64

// foldInt64s4 is foldInt64s16 with AVX2 over v[:8·blocks].
//
//go:noescape
func foldInt64s4(v *int64, blocks int) uint64

// packInt64s4 is packInt64s8 with AVX2, four values a block, by table
// idx (narrowTables.pack2); it stores 16 − 2w bytes past the last value's.
//
//go:noescape
func packInt64s4(dst *byte, v *int64, blocks, w int, idx *[32]byte)

// unpackInt64s4 is unpackInt64s8 with AVX2, four values a block, by table
// idx (narrowTables.unpack2); it loads 16 − 2w bytes past the last
// value's.
//
//go:noescape
func unpackInt64s4(v *int64, src *byte, blocks, w int, idx *[32]byte)

// packInt64s8 writes the low w bytes of each of the values v[:8·blocks],
// in order, at dst, by table idx (packIndex); it stores 64 bytes a block,
// so dst must hold 64 − 8w bytes past the last value's.
//
//go:noescape
func packInt64s8(dst *byte, v *int64, blocks, w int, idx *[64]byte)

// unpackInt64s8 reads 8·blocks values of w bytes from src into v,
// sign-extended, by table idx (unpackIndex); it loads 64 bytes a block, so
// src must hold 64 − 8w bytes past the last value's.
//
//go:noescape
func unpackInt64s8(v *int64, src *byte, blocks, w int, idx *[64]byte)

// narrowTables are the byte tables of each width: pack[w] takes output
// byte j from the block's value j/w, byte j%w; unpack[w] puts byte k of
// value q from input byte q·w+k (the bytes past w are shifted out). The
// AVX2 forms' tables work in each 128-bit lane's two values: pack2[w]
// takes lane byte j < 2w from value j/w, byte j%w (zero past them);
// unpack2[w] puts byte k < w of value q from lane byte q·w+k (zero
// above).
var narrowTables = func() (t struct {
	pack, unpack   [9][64]byte
	pack2, unpack2 [9][32]byte
}) {
	for w := 1; w <= 8; w++ {
		for lane := range 2 {
			for j := range 16 {
				t.pack2[w][16*lane+j], t.unpack2[w][16*lane+j] = 0x80, 0x80
				if j < 2*w {
					t.pack2[w][16*lane+j] = byte(j/w*8 + j%w)
				}
				if q, k := j/8, j%8; k < w {
					t.unpack2[w][16*lane+j] = byte(q*w + k)
				}
			}
		}
		for j := range 8 * w {
			t.pack[w][j] = byte(j/w*8 + j%w)
		}
		for q := range 8 {
			for k := range 8 {
				t.unpack[w][q*8+k] = byte(q*w + k)
			}
		}
	}
	return t
}()

// foldBlocks ORs x ^ (x >> 63) over v's whole blocks of sixteen (with
// AVX2 alone, eight), and returns how many values it took: the rest is
// the caller's loop.
func foldBlocks(v []int64) (folded uint64, n int) {
	switch {
	case hasVBMI && len(v) >= 16:
		return foldInt64s16(&v[0], len(v)/16), len(v) / 16 * 16
	case hasAVX2 && len(v) >= 8:
		return foldInt64s4(&v[0], len(v)/8), len(v) / 8 * 8
	}
	return 0, 0
}

// packInt64s writes v's values, w bytes each, at b (room for
// w·len(v)+64 bytes), and returns how many it wrote: whole blocks of
// eight (with AVX2 alone, four), the rest for the caller's loop.
func packInt64s(b []byte, v []int64, w int) int {
	if len(b) < w*len(v)+64 {
		return 0
	}
	switch {
	case hasVBMI && len(v) >= 8:
		blocks := len(v) / 8
		packInt64s8(&b[0], &v[0], blocks, w, &narrowTables.pack[w])
		return 8 * blocks
	case hasAVX2 && len(v) >= 4:
		blocks := len(v) / 4
		packInt64s4(&b[0], &v[0], blocks, w, &narrowTables.pack2[w])
		return 4 * blocks
	}
	return 0
}

// unpackInt64s reads values of w bytes from b into v while a whole block
// and the bytes its loads reach remain, and returns how many it read.
func unpackInt64s(v []int64, b []byte, w int) int {
	switch {
	case hasVBMI && len(b) >= 64:
		// Block k loads b[8wk : 8wk+64]: it must lie inside b.
		if blocks := min(len(v)/8, (len(b)-64)/(8*w)+1); blocks > 0 {
			unpackInt64s8(&v[0], &b[0], blocks, w, &narrowTables.unpack[w])
			return 8 * blocks
		}
	case hasAVX2 && len(b) >= 2*w+16:
		// Block k loads b[4wk : 4wk+2w+16]: it must lie inside b.
		if blocks := min(len(v)/4, (len(b)-2*w-16)/(4*w)+1); blocks > 0 {
			unpackInt64s4(&v[0], &b[0], blocks, w, &narrowTables.unpack2[w])
			return 4 * blocks
		}
	}
	return 0
}
