package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func idxBytes(dims []int, payload []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 8, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(payload)
	return b.Bytes()
}

func writeFile(t *testing.T, name string, b []byte, gz bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if gz {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		b = z.Bytes()
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadIDXRoundTrip(t *testing.T) {
	payload := []byte{1, 2, 3, 4, 5, 6}
	for _, gz := range []bool{false, true} {
		p := writeFile(t, "x.idx", idxBytes([]int{2, 3}, payload), gz)
		idx, err := ReadIDX(p)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(idx.Dims, []int{2, 3}) || !bytes.Equal(idx.Data, payload) {
			t.Fatalf("gz=%v: got %v %v", gz, idx.Dims, idx.Data)
		}
	}
}

func TestReadIDXCorrupt(t *testing.T) {
	good := idxBytes([]int{2, 3}, []byte{1, 2, 3, 4, 5, 6})
	wrongMagic := slices.Clone(good)
	wrongMagic[0] = 0x42
	for _, tc := range []struct {
		name, want string
		file       []byte
	}{
		{"wrong magic", "byte offset 0: wrong magic", wrongMagic},
		{"truncated data", "byte offset 16: truncated data: want 6 bytes", good[:16]},
		{"truncated mid data", "byte offset 14: truncated data", good[:14]},
		{"truncated header", "byte offset 8: truncated dimension", good[:9]},
		{"bomb", "exceeds", idxBytes([]int{1 << 20, 1 << 20}, nil)},
		{"empty", "byte offset 0: truncated IDX header", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, gz := range []bool{false, true} {
				p := writeFile(t, "bad-images.gz", tc.file, gz)
				_, err := ReadIDX(p)
				if err == nil {
					t.Fatal("corrupt file accepted")
				}
				if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("gz=%v: error %q lacks path or %q", gz, err, tc.want)
				}
			}
		})
	}
}

func TestOrderIsPureAndAPermutation(t *testing.T) {
	a, b := Order(7, 3, 1000), Order(7, 3, 1000)
	if !slices.Equal(a, b) {
		t.Fatal("same seed and epoch gave different orders")
	}
	if slices.Equal(a, Order(7, 4, 1000)) || slices.Equal(a, Order(8, 3, 1000)) {
		t.Fatal("order does not depend on epoch or seed")
	}
	s := slices.Clone(a)
	slices.Sort(s)
	for i, v := range s {
		if v != i {
			t.Fatalf("not a permutation at %d", i)
		}
	}
}

func TestSharePartitionsBatch(t *testing.T) {
	batch := Order(1, 0, 256)[:250]
	for n := 1; n <= 7; n++ {
		var all []int
		for k := 0; k < n; k++ {
			all = append(all, Share(batch, k, n)...)
		}
		if !slices.Equal(all, batch) {
			t.Fatalf("n=%d: shares do not rebuild the batch", n)
		}
	}
}

func TestAugmentShiftsWithinRangeAndIsDeterministic(t *testing.T) {
	// One bright pixel in the middle of a 7x7 image.
	set := &Set{Rows: 7, Cols: 7, Classes: 10, Images: make([]byte, 49*20), Labels: make([]byte, 20)}
	for i := 0; i < 20; i++ {
		set.Images[i*49+3*7+3] = 255
		set.Labels[i] = byte(i % 10)
	}
	b := &Batcher{Set: set, Augment: Augment{Shift: 2}, Seed: 5}
	idx := make([]int, 20)
	for i := range idx {
		idx[i] = i
	}
	x1, y := make([]float32, 20*49), make([]float32, 20)
	x2 := make([]float32, 20*49)
	b.Fill(x1, y, idx, 1)
	b.Fill(x2, y, idx, 1)
	if !slices.Equal(x1, x2) {
		t.Fatal("augmentation not deterministic")
	}
	moved := 0
	for i := 0; i < 20; i++ {
		img := x1[i*49 : (i+1)*49]
		at := slices.Index(img, 1)
		if at < 0 {
			t.Fatalf("sample %d: pixel lost", i)
		}
		r, c := at/7, at%7
		if r < 1 || r > 5 || c < 1 || c > 5 {
			t.Fatalf("sample %d: shifted to (%d,%d), more than 2 pixels", i, r, c)
		}
		if r != 3 || c != 3 {
			moved++
		}
		if y[i] != float32(i%10) {
			t.Fatalf("label %d = %v", i, y[i])
		}
	}
	if moved == 0 {
		t.Fatal("no sample was shifted")
	}
	// A worker filling only a share of the batch sees the same pixels.
	part := make([]float32, 5*49)
	b.Fill(part, y[:5], idx[10:15], 1)
	if !slices.Equal(part, x1[10*49:15*49]) {
		t.Fatal("a share of the batch was augmented differently")
	}
}

func TestGoMNISTVersionMatchesGoMod(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), GoMNISTModule+" "+GoMNISTVersion) {
		t.Fatalf("go.mod does not require %s %s", GoMNISTModule, GoMNISTVersion)
	}
}

func TestLoadRealDatasets(t *testing.T) {
	for _, tc := range []struct{ name string }{{"mnist"}, {"fashion-mnist"}} {
		t.Run(tc.name, func(t *testing.T) {
			train, test, err := Load(tc.name, "")
			if err != nil {
				t.Fatal(err) // .ci/run installs both datasets; missing data is a failure
			}
			if train.Len() != 60000 || test.Len() != 10000 || train.Rows != 28 || train.Cols != 28 {
				t.Fatalf("sizes %d/%d %dx%d", train.Len(), test.Len(), train.Rows, train.Cols)
			}
			rest, val, err := SplitValidation(train, 5000)
			if err != nil || rest.Len() != 55000 || val.Len() != 5000 {
				t.Fatalf("split: %v %d %d", err, rest.Len(), val.Len())
			}
			var counts [10]int
			for _, l := range test.Labels {
				counts[l]++
			}
			for c, n := range counts {
				if n < 800 {
					t.Fatalf("class %d has %d test samples", c, n)
				}
			}
		})
	}
}

func TestLoadMissingNamesInstall(t *testing.T) {
	_, _, err := Load("fashion-mnist", t.TempDir())
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "dataset-fashion-mnist") {
		t.Fatalf("error %v does not name the package to install", err)
	}
	if _, _, err := Load("cifar", ""); err == nil || !strings.Contains(err.Error(), "unknown dataset") {
		t.Fatalf("unknown dataset: %v", err)
	}
}

// TestFlipMirrorsHalfAndKeepsShifts: with flips on, about half the images
// are mirrored left to right (a pure function of seed, epoch and index),
// and every image's shift is the one it gets without flips.
func TestFlipMirrorsHalfAndKeepsShifts(t *testing.T) {
	// One bright pixel left of the middle of a 7x7 image, row 3 column 1.
	const n = 200
	set := &Set{Rows: 7, Cols: 7, Classes: 10, Images: make([]byte, 49*n), Labels: make([]byte, n)}
	idx := make([]int, n)
	for i := range n {
		set.Images[i*49+3*7+1] = 255
		idx[i] = i
	}
	plain := &Batcher{Set: set, Augment: Augment{Shift: 1}, Seed: 5}
	flip := &Batcher{Set: set, Augment: Augment{Shift: 1, Flip: true}, Seed: 5}
	x1, x2, y := make([]float32, n*49), make([]float32, n*49), make([]float32, n)
	plain.Fill(x1, y, idx, 2)
	flip.Fill(x2, y, idx, 2)
	flipped := 0
	for i := range n {
		a, b := slices.Index(x1[i*49:(i+1)*49], 1), slices.Index(x2[i*49:(i+1)*49], 1)
		dy, dx := plain.Shift(i, 2)
		if a != (3+dy)*7+1+dx {
			t.Fatalf("sample %d: the plain image's pixel at %d", i, a)
		}
		want := a
		if flip.Flipped(i, 2) {
			flipped++
			want = (3+dy)*7 + (7 - 1 - 1) + dx // mirrored column 5, then the same shift
		}
		if b != want {
			t.Fatalf("sample %d (flipped %v, shift %d,%d): pixel at %d, want %d", i, flip.Flipped(i, 2), dy, dx, b, want)
		}
	}
	if flipped < 70 || flipped > 130 {
		t.Fatalf("%d of %d flipped", flipped, n)
	}
}

// TestTruncate: with augment.truncate, about that share of text windows
// keep a random prefix of their bytes (at least 8, never past their own
// length) and pad the rest, the same for the same (seed, epoch, sample)
// and another cut in another epoch; short windows stay whole.
func TestTruncate(t *testing.T) {
	const n, w = 400, 32
	s := &Set{Name: "text/train", Rows: 1, Cols: w, Classes: 2, Images: make([]byte, n*w), Labels: make([]byte, n)}
	for i := range n {
		length := w
		if i%2 == 1 {
			length = 20 // a document's last window: padding after 20 bytes
		}
		if i%10 == 9 {
			length = 5 // shorter than the least kept: whole
		}
		for j := range length {
			s.Images[i*w+j] = byte(1 + (i+j)%200)
		}
	}
	b := &Batcher{Set: s, Augment: Augment{Truncate: 0.5}, Seed: 3}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	fill := func(epoch int) []float32 {
		x, y := make([]float32, n*w), make([]float32, n)
		b.Fill(x, y, idx, epoch)
		return x
	}
	e0, again, e1 := fill(0), fill(0), fill(1)
	cut, moved := 0, 0
	for i := range n {
		row, orig := e0[i*w:(i+1)*w], s.Images[i*w:(i+1)*w]
		kept := w
		for kept > 0 && row[kept-1] == 0 {
			kept--
		}
		full := w
		for full > 0 && orig[full-1] == 0 {
			full--
		}
		for j := range kept {
			if row[j] != float32(orig[j])*(1.0/255) {
				t.Fatalf("window %d: byte %d changed", i, j)
			}
		}
		if kept < full {
			cut++
			if kept < 8 || full <= 8 {
				t.Fatalf("window %d of %d bytes kept %d", i, full, kept)
			}
		}
		if slices.Compare(row, again[i*w:(i+1)*w]) != 0 {
			t.Fatalf("window %d: another cut for the same epoch", i)
		}
		if slices.Compare(row, e1[i*w:(i+1)*w]) != 0 {
			moved++
		}
	}
	if cut < n/2*80/100*9/10 || cut > n/2 || moved == 0 {
		t.Errorf("%d of %d windows cut (about half of those over 8 bytes expected), %d differ in the next epoch", cut, n, moved)
	}
}

// TestShiftRunsMatchPixels checks shift's row runs against a pixel-by-pixel
// translation, for several channel counts and shifts past the border.
func TestShiftRunsMatchPixels(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, ch := range []int{1, 3} {
		rows, cols := 5, 6
		src := make([]byte, rows*cols*ch)
		for i := range src {
			src[i] = byte(r.IntN(256))
		}
		for dy := -6; dy <= 6; dy++ {
			for dx := -7; dx <= 7; dx++ {
				got := make([]float32, len(src))
				for i := range got {
					got[i] = -1 // every value must be written
				}
				shift(got, src, rows, cols, ch, dy, dx, false)
				for y := range rows {
					for x := range cols {
						for k := range ch {
							want := float32(0)
							if sy, sx := y-dy, x-dx; sy >= 0 && sy < rows && sx >= 0 && sx < cols {
								want = float32(src[(sy*cols+sx)*ch+k]) * (1.0 / 255)
							}
							if g := got[(y*cols+x)*ch+k]; g != want {
								t.Fatalf("ch %d shift (%d, %d): pixel (%d, %d, %d) = %v, want %v", ch, dy, dx, y, x, k, g, want)
							}
						}
					}
				}
			}
		}
	}
}
