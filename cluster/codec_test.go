package cluster

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDecodeFloat32sRefusesNonFinite puts a NaN or an Inf at every
// position of parts of every length up to 40 (both lanes of a word, every
// word of the unrolled block, every lane of the eight-value blocks, the
// tail): each is found, and refused, at its index; finite
// values — zeros of both signs, subnormals, the largest float — pass and
// arrive unchanged.
func TestDecodeFloat32sRefusesNonFinite(t *testing.T) {
	finite := []float32{0, float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, -math.MaxFloat32, math.MaxFloat32, 1.5, -3}
	for n := 1; n <= 40; n++ {
		v := make([]float32, n)
		for i := range v {
			v[i] = finite[i%len(finite)]
		}
		got := make([]float32, n)
		if err := decodeFloat32s(got, encodeFloat32s(nil, v)); err != nil {
			t.Fatalf("n=%d: finite values refused: %v", n, err)
		}
		if !slices.Equal(float32Bits(got), float32Bits(v)) {
			t.Fatalf("n=%d: decoded %v, want %v", n, got, v)
		}
		for at := range n {
			for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
				w := slices.Clone(v)
				w[at] = bad
				b := encodeFloat32s(nil, w)
				if i := nonFinite(b); i != at {
					t.Fatalf("n=%d: %v at %d found at %d", n, bad, at, i)
				}
				if err := decodeFloat32s(got, b); err == nil || err.Error() != fmt.Sprintf("non-finite value at %d", at) {
					t.Fatalf("n=%d: %v at %d: %v", n, bad, at, err)
				}
			}
		}
	}
}

// TestFloat32BytesIsTheEncoding checks the part a float vector is sent as
// is its little-endian encoding, on this machine whichever way it stores
// floats.
func TestFloat32BytesIsTheEncoding(t *testing.T) {
	v := []float32{1, -2.5, 3e-9, 7e30}
	if got, want := float32Bytes(nil, v), encodeFloat32s(nil, v); !slices.Equal(got, want) {
		t.Fatalf("part %x, encoding %x", got, want)
	}
}

func float32Bits(v []float32) []uint32 {
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = math.Float32bits(x)
	}
	return out
}

func benchInts(n int) []int64 {
	rng := rand.New(rand.NewPCG(1, 2))
	v := make([]int64, n)
	for i := range v {
		v[i] = int64(rng.NormFloat64() * (1 << 30))
	}
	return v
}

func BenchmarkEncodeInt64s(b *testing.B) {
	v := benchInts(133_000)
	var dst []byte
	b.SetBytes(int64(8 * len(v)))
	for b.Loop() {
		dst = encodeInt64s(dst, v)
	}
}

func BenchmarkDecodeInt64s(b *testing.B) {
	v := benchInts(133_000)
	enc := encodeInt64s(nil, v)
	out := make([]int64, len(v))
	b.SetBytes(int64(8 * len(v)))
	for b.Loop() {
		decodeInt64s(out, enc)
	}
}

func BenchmarkEncodeFloat32s(b *testing.B) {
	v := make([]float32, 133_000)
	for i := range v {
		v[i] = float32(i) * 1e-3
	}
	var dst []byte
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		dst = encodeFloat32s(dst, v)
	}
}

func BenchmarkDecodeFloat32s(b *testing.B) {
	v := make([]float32, 133_000)
	for i := range v {
		v[i] = float32(i) * 1e-3
	}
	enc := encodeFloat32s(nil, v)
	out := make([]float32, len(v))
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		if err := decodeFloat32s(out, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	v := benchInts(133_000)
	out := make([]int64, len(v))
	b.SetBytes(int64(8 * len(v)))
	for b.Loop() {
		copy(out, v)
	}
}
