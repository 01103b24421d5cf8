package cluster

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestNarrowBlocksMatchLoops encodes and decodes parts of every width and
// of lengths around the blocks of four and eight with the AVX-512 blocks,
// the AVX2 blocks and the Go loops alone: the same bytes, the same values
// back — the widest and narrowest values of each width included, decoded
// from parts with no room past their last byte.
func TestNarrowBlocksMatchLoops(t *testing.T) {
	if !hasVBMI && !hasAVX2 {
		t.Skip("neither AVX-512 VBMI nor AVX2 here: the Go loops are the only codec")
	}
	vbmi, avx2 := hasVBMI, hasAVX2
	defer func() { hasVBMI, hasAVX2 = vbmi, avx2 }()
	rng := rand.New(rand.NewPCG(7, 8))
	for w := 1; w <= 8; w++ {
		hi := int64(1)<<(8*w-1) - 1
		if w == 8 {
			hi = math.MaxInt64
		}
		for n := 0; n <= 90; n++ {
			v := make([]int64, n)
			for i := range v {
				switch i % 5 {
				case 0:
					v[i] = hi
				case 1:
					v[i] = -hi - 1
				default:
					v[i] = rng.Int64N(hi) - rng.Int64N(hi)
				}
			}
			if n > 0 && w > 1 {
				v[0] = hi // the width is w, not less
			}
			hasVBMI, hasAVX2 = false, false
			slow := encodeInt64s(nil, v)
			for _, form := range []string{"AVX-512", "AVX2"} {
				if form == "AVX-512" && !vbmi || form == "AVX2" && !avx2 {
					continue
				}
				hasVBMI, hasAVX2 = form == "AVX-512", avx2
				fast := encodeInt64s(nil, v)
				if !slices.Equal(fast, slow) {
					t.Fatalf("%s, w=%d n=%d: blocks encode %x, the loop %x", form, w, n, fast, slow)
				}
				exact := slices.Clip(slices.Clone(fast))
				got := make([]int64, n)
				if k := unpackInt64s(got, exact[1:], w); n >= 40 && k == 0 {
					t.Fatalf("%s, w=%d n=%d: the blocks decoded none", form, w, n)
				}
				if k := packInt64s(make([]byte, w*n+64), v, w); n >= 8 && k < n-7 {
					t.Fatalf("%s, w=%d n=%d: the blocks encoded %d", form, w, n, k)
				}
				decodeInt64s(got, exact)
				if !slices.Equal(got, v) {
					t.Fatalf("%s, w=%d n=%d: decoded %v, want %v", form, w, n, got, v)
				}
			}
		}
	}
}

// BenchmarkNarrowForms encodes and decodes a part of 133 000 values (about
// 30 bits each) with each form this CPU has: the Go loops, AVX2, AVX-512.
func BenchmarkNarrowForms(b *testing.B) {
	vbmi, avx2 := hasVBMI, hasAVX2
	defer func() { hasVBMI, hasAVX2 = vbmi, avx2 }()
	v := benchInts(133_000)
	enc := encodeInt64s(nil, v)
	out := make([]int64, len(v))
	for _, form := range []string{"loops", "AVX2", "AVX-512"} {
		if form == "AVX2" && !avx2 || form == "AVX-512" && !vbmi {
			continue
		}
		set := func() { hasVBMI, hasAVX2 = form == "AVX-512", form != "loops" && avx2 }
		b.Run("encode/"+form, func(b *testing.B) {
			set()
			var dst []byte
			b.SetBytes(int64(8 * len(v)))
			for b.Loop() {
				dst = encodeInt64s(dst, v)
			}
		})
		b.Run("decode/"+form, func(b *testing.B) {
			set()
			b.SetBytes(int64(8 * len(v)))
			for b.Loop() {
				decodeInt64s(out, enc)
			}
		})
	}
}
