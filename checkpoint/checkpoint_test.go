package checkpoint

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestHuffmanRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := map[string][]uint16{
		"one symbol":  slices.Repeat([]uint16{7}, 100),
		"two symbols": {0, 1, 1, 1, 0},
		"empty":       {},
	}
	skew := make([]uint16, 20000)
	for i := range skew {
		// Geometric: very deep trees unless lengths are limited.
		k := 0
		for k < 255 && r.Float64() < 0.7 {
			k++
		}
		skew[i] = uint16(k)
	}
	cases["geometric"] = skew
	uni := make([]uint16, 5000)
	for i := range uni {
		uni[i] = uint16(r.IntN(256))
	}
	cases["uniform"] = uni
	for name, syms := range cases {
		b := huffEncode(syms)
		if got := huffSize(syms); got != len(b) {
			t.Errorf("%s: huffSize %d, encoded %d", name, got, len(b))
		}
		back, err := huffDecode(b, len(syms))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(back, syms) && len(syms) > 0 {
			t.Fatalf("%s: round trip differs", name)
		}
		if len(syms) > 0 {
			if _, err := huffDecode(b, len(syms)-1); err == nil {
				t.Errorf("%s: a limit below the count was accepted", name)
			}
		}
	}
	for _, l := range huffmanLengths([]int{1 << 20, 1 << 19, 1 << 18, 1 << 17, 1 << 16, 1 << 15, 1 << 14, 1 << 13, 1 << 12, 1 << 11, 1 << 10, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 1}) {
		if l > maxCodeLen {
			t.Fatalf("code length %d > %d", l, maxCodeLen)
		}
	}
}

// sparseWeight returns a [rows, cols] weight with the given density.
func sparseWeight(r *rand.Rand, rows, cols int, density float64) []float32 {
	w := make([]float32, rows*cols)
	for i := range w {
		if r.Float64() < density {
			w[i] = float32(r.NormFloat64() * 0.1)
		}
	}
	return w
}

// quantized fake-quantizes per channel (symmetric), as QAT does.
func quantized(w []float32, channels, bits int) ([]float32, *Quant) {
	qmax := int32(1)<<(bits-1) - 1
	per := len(w) / channels
	q := &Quant{Bits: bits, QMin: -qmax, Scale: make([]float32, channels), Zero: make([]int32, channels), Codes: make([]int32, len(w))}
	out := make([]float32, len(w))
	for c := range channels {
		var a float32
		for _, v := range w[c*per : (c+1)*per] {
			a = max(a, float32(math.Abs(float64(v))))
		}
		q.Scale[c] = a / float32(qmax)
		if q.Scale[c] == 0 {
			q.Scale[c] = 1
		}
		for i := c * per; i < (c+1)*per; i++ {
			code := int32(math.RoundToEven(float64(w[i] / q.Scale[c])))
			q.Codes[i] = min(max(code, -qmax), qmax)
			out[i] = float32(q.Codes[i]) * q.Scale[c]
		}
	}
	return out, q
}

func roundTrip(t *testing.T, f *File) *File {
	t.Helper()
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Tensors) != len(f.Tensors) {
		t.Fatalf("%d tensors back, wrote %d", len(g.Tensors), len(f.Tensors))
	}
	for i, want := range f.Tensors {
		got := g.Tensors[i]
		if got.Name != want.Name || got.Role != want.Role || !slices.Equal(got.Shape, want.Shape) {
			t.Fatalf("tensor %d: %s %s %v, wrote %s %s %v", i, got.Name, got.Role, got.Shape, want.Name, want.Role, want.Shape)
		}
		if !slices.Equal(got.Mask, want.Mask) {
			t.Fatalf("%s: mask differs", want.Name)
		}
		if len(got.Data) != len(want.Data) {
			t.Fatalf("%s: %d values, wrote %d", want.Name, len(got.Data), len(want.Data))
		}
		for j := range want.Data {
			if math.Float32bits(got.Data[j]) != math.Float32bits(want.Data[j]) {
				t.Fatalf("%s (%s): element %d is %g, wrote %g", want.Name, got.Encoding, j, got.Data[j], want.Data[j])
			}
		}
		if want.Quant != nil && f.Kind == KindModel && !slices.Equal(got.Quant.Codes, want.Quant.Codes) {
			t.Fatalf("%s: codes differ", want.Name)
		}
	}
	if WeightsDigest(g.Tensors) != WeightsDigest(f.Tensors) {
		t.Fatal("weights digest changed in the round trip")
	}
	if g.Kind != f.Kind || g.Job != f.Job || string(g.State) != string(f.State) || g.SHA256 != f.SHA256 {
		t.Fatalf("metadata: %+v", g)
	}
	return g
}

func TestEncodingsRoundTripExactly(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	w92 := sparseWeight(r, 300, 784, 0.08)
	wq, q := quantized(sparseWeight(r, 100, 300, 0.1), 100, 4)
	wq8, q8 := quantized(sparseWeight(r, 10, 100, 1), 10, 8)
	dense := sparseWeight(r, 50, 20, 1)
	dense[3] = float32(math.Copysign(0, -1)) // −0 survives
	shared := make([]float32, 4000)          // few distinct values: a codebook
	for i := range shared {
		shared[i] = []float32{0, -0.25, 0.5, 0.125, 0, 0, 0}[r.IntN(7)]
	}
	veryThin := make([]float32, 100000)
	veryThin[99999], veryThin[5] = 1, -2
	mask := make([]byte, 1000)
	for i := range mask {
		mask[i] = byte(r.IntN(2))
	}
	f := &File{Kind: KindModel, Job: "job", Version: "test", State: []byte(`{"a":1}`), Tensors: []*Tensor{
		{Name: "w92", Role: RoleParam, Shape: []int{300, 784}, Data: w92},
		{Name: "wq", Role: RoleParam, Shape: []int{100, 300}, Data: wq, Quant: q},
		{Name: "wq8", Role: RoleParam, Shape: []int{10, 100}, Data: wq8, Quant: q8},
		{Name: "dense", Role: RoleParam, Shape: []int{50, 20}, Data: dense},
		{Name: "shared", Role: RoleParam, Shape: []int{4000}, Data: shared},
		{Name: "thin", Role: RoleParam, Shape: []int{100, 1000}, Data: veryThin},
		{Name: "scalar", Role: RoleState, Shape: []int{}, Data: []float32{1.5}},
		{Name: "empty", Role: RoleParam, Shape: []int{0, 3}, Data: []float32{}},
		{Name: "m", Role: RoleMask, Shape: []int{1000}, Mask: mask},
	}}
	g := roundTrip(t, f)
	want := map[string]string{"w92": EncSparse, "wq": EncSparseQuant, "dense": EncDense,
		"shared": EncSparseCodebook, "thin": EncSparse, "m": EncMask}
	for _, ten := range g.Tensors {
		if e, ok := want[ten.Name]; ok && ten.Encoding != e {
			t.Errorf("%s stored as %s (%s index, %s values), want %s", ten.Name, ten.Encoding, ten.IndexFormat, ten.ValueFormat, e)
		}
	}
	if e := g.Tensor("wq8").Encoding; !strings.HasSuffix(e, EncQuant) {
		t.Errorf("wq8 stored as %s", e)
	}
	// 8 % dense fp32 weights: the index costs ≈ 5 bits per kept weight.
	if ten := g.Tensor("w92"); ten.StoredBytes > int(float64(len(w92))*0.08*(4+0.75)) {
		t.Errorf("w92: %d bytes", ten.StoredBytes)
	}
	// 4-bit codes at 10 % density: far under a bitmap plus packed codes.
	if ten := g.Tensor("wq"); ten.StoredBytes > 30000/8+3000/2 {
		t.Errorf("wq: %d bytes (%s, %s)", ten.StoredBytes, ten.IndexFormat, ten.ValueFormat)
	}
	// Training checkpoints store densely.
	f.Kind = KindTraining
	g = roundTrip(t, f)
	if e := g.Tensor("wq").Encoding; e != EncDense {
		t.Errorf("training checkpoint stored wq as %s", e)
	}
}

func TestQuantMustBeExact(t *testing.T) {
	w, q := quantized([]float32{0.5, -0.25, 0.1, 0}, 1, 4)
	w[2] += 1e-3
	_, err := Encode(&File{Kind: KindModel, Tensors: []*Tensor{{Name: "w", Role: RoleParam, Shape: []int{4}, Data: w, Quant: q}}})
	if err == nil || !strings.Contains(err.Error(), "element 2") {
		t.Fatalf("inexact quantization accepted: %v", err)
	}
}

func TestCSRChosenWhenSmallest(t *testing.T) {
	// Kept elements bunched in one long row: CSR's row counts are cheap
	// and its columns beat a bitmap over 100 000 elements; the deltas are
	// a run of ones, which Huffman also codes well — whichever wins, it
	// must decode.
	d := make([]float32, 10*10000)
	for i := range 2000 {
		d[3*10000+i*5] = float32(i + 1)
	}
	for _, ix := range []string{IndexCSR, IndexBitmap, IndexDelta} {
		s := &stored{indexFormat: ix}
		pos := []int{}
		for i, v := range d {
			if v != 0 {
				pos = append(pos, i)
			}
		}
		switch ix {
		case IndexCSR:
			s.index = csrIndex(10, 10000, pos)
		case IndexBitmap:
			s.index = bitmap(len(d), func(i int) bool { return d[i] != 0 })
		case IndexDelta:
			s.index = deltaIndex(pos)
		}
		got, err := decodeIndex(s, []int{10, 10000}, len(d), len(pos))
		if err != nil || !slices.Equal(got, pos) {
			t.Fatalf("%s: %v", ix, err)
		}
	}
}

func testFile(t *testing.T) []byte {
	t.Helper()
	b := testFileBytes()
	if b == nil {
		t.Fatal("test file does not encode")
	}
	return b
}

func testFileBytes() []byte {
	r := rand.New(rand.NewPCG(5, 6))
	wq, q := quantized(sparseWeight(r, 30, 40, 0.2), 30, 6)
	b, err := Encode(&File{Kind: KindModel, Job: "t", State: []byte(`{}`), Tensors: []*Tensor{
		{Name: "fc1", Role: RoleParam, Shape: []int{30, 40}, Data: wq, Quant: q},
		{Name: "fc1.bias", Role: RoleParam, Shape: []int{30}, Data: sparseWeight(r, 1, 30, 1)},
	}})
	if err != nil {
		return nil
	}
	return b
}

func TestBadInputIsRefused(t *testing.T) {
	good := testFile(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x10
	wrongMagic := slices.Clone(good)
	copy(wrongMagic, "ARROW2")
	cases := map[string]struct {
		b    []byte
		want string
	}{
		"truncated":   {good[:len(good)-100], "magic"},
		"cut at end":  {good[:len(good)-1], "magic"},
		"flipped":     {flipped, "checksum"},
		"wrong magic": {wrongMagic, "magic"},
		"empty":       {nil, "magic"},
	}
	for name, c := range cases {
		p := write(strings.ReplaceAll(name, " ", "_")+".arrow", c.b)
		_, err := Read(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v (want an error naming the file and %q)", name, err, c.want)
		}
	}
	// Every single-byte flip is refused.
	for i := range good {
		b := slices.Clone(good)
		b[i] ^= 0x01
		if _, err := Decode(b); err == nil {
			t.Fatalf("flip of byte %d of %d accepted", i, len(good))
		}
	}
	// Well-signed files with wrong contents.
	f := &File{Kind: KindModel, Tensors: []*Tensor{{Name: "w", Role: RoleParam, Shape: []int{2}, Data: []float32{1, 2}}}}
	newer, err := encodeFile(f, FormatVersion+1, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(newer); err == nil || !strings.Contains(err.Error(), "format version") {
		t.Errorf("newer version: %v", err)
	}
	missing, err := encodeFile(f, FormatVersion, "codes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(missing); err == nil || !strings.Contains(err.Error(), `missing column "codes"`) {
		t.Errorf("missing column: %v", err)
	}
}

func TestShapeChecks(t *testing.T) {
	// A shape that disagrees with the data, and one absurd for the file.
	cases := []struct {
		s    *stored
		want string
	}{
		{&stored{shape: []int64{3}, encoding: EncDense, indexFormat: IndexNone, valueFormat: ValueF32, count: 3, values: []float32{1, 2}}, "float values"},
		{&stored{shape: []int64{1 << 20, 1 << 20}, encoding: EncDense, indexFormat: IndexNone, valueFormat: ValueF32}, "2^31"},
		{&stored{shape: []int64{1 << 30}, encoding: EncSparse, indexFormat: IndexDelta, valueFormat: ValueF32}, "absurd"},
		{&stored{shape: []int64{-1}, encoding: EncDense}, "dimension"},
		{&stored{shape: []int64{4}, encoding: EncSparse, indexFormat: IndexBitmap, valueFormat: ValueF32, count: 1, index: []byte{3}, values: []float32{1}}, "more than"},
		{&stored{shape: []int64{4}, encoding: EncQuant, indexFormat: IndexNone, valueFormat: ValuePacked, count: 4, bits: 4, codes: []byte{1}, scale: []float32{1}, zero: []int32{0}}, "needs 2 bytes"},
	}
	for _, c := range cases {
		_, err := decode(c.s, 1<<20)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.s.shape, err, c.want)
		}
	}
}

func TestWriteIsAtomicAndKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.arrow")
	f := &File{Kind: KindModel, Tensors: []*Tensor{{Name: "w", Role: RoleParam, Shape: []int{2}, Data: []float32{1, 2}}}}
	if err := Write(p, f); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	bad := &File{Kind: KindModel, Tensors: []*Tensor{{Name: "w", Role: RoleParam, Shape: []int{3}, Data: []float32{1, 2}}}}
	if err := Write(p, bad); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("bad tensor: %v", err)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Fatal("a failed write changed the existing file")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
