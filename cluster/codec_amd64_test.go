package cluster

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestNarrowBlocksMatchLoops encodes and decodes parts of every width and
// of lengths around the blocks of eight with the AVX-512 blocks and with
// the Go loops alone: the same bytes, the same values back — the widest
// and narrowest values of each width included, decoded from parts with no
// room past their last byte.
func TestNarrowBlocksMatchLoops(t *testing.T) {
	if !hasVBMI {
		t.Skip("no AVX-512 VBMI here: the Go loops are the only codec")
	}
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
			fast := encodeInt64s(nil, v)
			hasVBMI = false
			slow := encodeInt64s(nil, v)
			hasVBMI = true
			if !slices.Equal(fast, slow) {
				t.Fatalf("w=%d n=%d: blocks encode %x, the loop %x", w, n, fast, slow)
			}
			exact := slices.Clip(slices.Clone(fast))
			got := make([]int64, n)
			decodeInt64s(got, exact)
			if !slices.Equal(got, v) {
				t.Fatalf("w=%d n=%d: decoded %v, want %v", w, n, got, v)
			}
		}
	}
}
