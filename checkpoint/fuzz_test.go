package checkpoint

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzDecode feeds the reader altered and truncated files: it must
// return an error, never panic or accept them. The seed corpus is real
// files (testdata/*.arrow, written by a training run) and runs in the
// normal tests.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.arrow")
	var good [][]byte
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := Decode(b); err != nil {
			f.Fatalf("seed %s: %v", p, err)
		}
		f.Add(b)
		good = append(good, b)
	}
	f.Add(testFileBytes())
	good = append(good, testFileBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := Decode(b)
		if err == nil && !slices.ContainsFunc(good, func(g []byte) bool { return bytes.Equal(g, b) }) {
			t.Fatal("an altered file was accepted")
		}
	})
}

// FuzzDecodeTensor feeds the tensor decoder (what runs after the checksum
// and the Arrow reader) arbitrary rows: indexes, codes and tables. It
// must return a tensor that matches its shape, or an error.
func FuzzDecodeTensor(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	wq, q := quantized(sparseWeight(r, 20, 30, 0.15), 20, 4)
	for _, ten := range []*Tensor{
		{Name: "q", Role: RoleParam, Shape: []int{20, 30}, Data: wq, Quant: q},
		{Name: "s", Role: RoleParam, Shape: []int{20, 30}, Data: sparseWeight(r, 20, 30, 0.1)},
		{Name: "c", Role: RoleParam, Shape: []int{600}, Data: make([]float32, 600)},
	} {
		if ten.Quant == nil {
			ten.Data[7] = 0.5
		}
		s, err := encode(ten, true)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s.encoding, s.indexFormat, s.valueFormat, int64(s.shape[0]), int64(len(ten.Data))/s.shape[0], s.count, s.bits, s.index, s.codes, len(s.scale))
	}
	f.Fuzz(func(t *testing.T, enc, ixf, vf string, d0, d1, count int64, bits int8, index, codes []byte, channels int) {
		channels = min(max(channels, 0), 64)
		s := &stored{shape: []int64{d0, d1}, encoding: enc, indexFormat: ixf, valueFormat: vf, count: count, bits: bits,
			index: index, codes: codes, scale: make([]float32, channels), zero: make([]int32, channels), values: []float32{1, 2, 3}, qmin: -7}
		ten, err := decode(s, 1<<16)
		if err == nil && len(ten.Data) != int(d0*d1) {
			t.Fatalf("%d values for shape %v", len(ten.Data), s.shape)
		}
	})
}
