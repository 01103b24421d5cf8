package data

import (
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// npy encodes a NumPy array (format 1) of descr over raw little-endian
// values.
func npy(descr string, shape []int, raw []byte) string {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	for (10+len(h)+1)%64 != 0 {
		h += " "
	}
	h += "\n"
	b := []byte("\x93NUMPY\x01\x00")
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h)))
	return string(append(append(b, h...), raw...))
}

func f32s(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func i64s(v ...int64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}

// TestCSV reads numeric features and a named label column (not last),
// and every sample keeps its label through the shuffle.
func TestCSV(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "train.csv"), "a,label,b\n0.5,1,-2\n1.5,0,3e2\n2.5,2,4\n")
	write(t, filepath.Join(dir, "test.csv"), "a,label,b\n7,1,8\n")
	train, test, err := Load("csv", dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 3 || test.Len() != 1 || train.Features() != 2 || train.Classes != 3 || test.Classes != 3 || train.Images != nil {
		t.Fatalf("train %d×%d, %d classes; test %d", train.Len(), train.Features(), train.Classes, test.Len())
	}
	want := map[byte][2]float32{1: {0.5, -2}, 0: {1.5, 300}, 2: {2.5, 4}}
	x, y := make([]float32, 6), make([]float32, 3)
	(&Batcher{Set: train}).Fill(x, y, []int{0, 1, 2}, 0)
	for i := range 3 {
		if w := want[byte(y[i])]; x[2*i] != w[0] || x[2*i+1] != w[1] {
			t.Errorf("sample %d: label %v, features %v, want %v", i, y[i], x[2*i:2*i+2], w)
		}
	}
}

// TestNPY reads uint8 images [N, C, H, W] (made NHWC) with int64 labels,
// and float features [N, F].
func TestNPY(t *testing.T) {
	dir := t.TempDir()
	// 2 samples of 2 channels, 1×2 pixels: channel-first values.
	write(t, filepath.Join(dir, "train_x.npy"), npy("|u1", []int{2, 2, 1, 2}, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	write(t, filepath.Join(dir, "train_y.npy"), npy("<i8", []int{2}, i64s(0, 4)))
	write(t, filepath.Join(dir, "test_x.npy"), npy("|u1", []int{1, 2, 1, 2}, []byte{9, 10, 11, 12}))
	write(t, filepath.Join(dir, "test_y.npy"), npy("<i8", []int{1}, i64s(3)))
	train, test, err := Load("npy", dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.Channels != 2 || train.Rows != 1 || train.Cols != 2 || train.Classes != 5 || test.Len() != 1 {
		t.Fatalf("train %+v", train)
	}
	if got := string(test.Images); got != string([]byte{9, 11, 10, 12}) { // NHWC
		t.Errorf("test pixels %v, want channels last", test.Images)
	}
	dir2 := t.TempDir()
	write(t, filepath.Join(dir2, "train_x.npy"), npy("<f4", []int{2, 3}, f32s(1, 2, 3, 4, 5, 6)))
	write(t, filepath.Join(dir2, "train_y.npy"), npy("|u1", []int{2}, []byte{1, 1}))
	write(t, filepath.Join(dir2, "test_x.npy"), npy("<f4", []int{1, 3}, f32s(-1, 0, 1)))
	write(t, filepath.Join(dir2, "test_y.npy"), npy("|u1", []int{1}, []byte{0}))
	train, test, err = Load("npy", dir2)
	if err != nil {
		t.Fatal(err)
	}
	if train.Features() != 3 || test.Floats[0] != -1 || train.Classes != 2 {
		t.Fatalf("float features: %+v / %+v", train, test)
	}
}

// TestImageFolders reads grey PNGs from class folders (classes named by
// their folders).
func TestImageFolders(t *testing.T) {
	dir := t.TempDir()
	for i, p := range []string{"train/cat/a.png", "train/cat/b.png", "train/dog/c.png", "test/dog/d.png"} {
		img := image.NewGray(image.Rect(0, 0, 3, 2))
		img.SetGray(1, 1, color.Gray{Y: uint8(10 * (i + 1))})
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		png.Encode(f, img)
		f.Close()
	}
	train, test, err := Load("images", dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 3 || test.Len() != 1 || train.Rows != 2 || train.Cols != 3 || train.Channels != 1 || train.Classes != 2 ||
		strings.Join(test.ClassNames, ",") != "cat,dog" || test.Labels[0] != 1 || test.Images[1*3+1] != 40 {
		t.Fatalf("train %d samples %d×%d×%d, %d classes %v; test %v", train.Len(), train.Rows, train.Cols, train.Channels, train.Classes, train.ClassNames, test.Images)
	}
}

// TestImageSize: with image_size, images of other sizes are scaled to
// cover it and their centre kept: a wide image black on its left quarter
// and white elsewhere keeps, in its 8×8 centre, white; a tall one white
// on its top quarter keeps black; without image_size, mixed sizes are
// refused naming the file and the remedy; image_size is for image folders.
func TestImageSize(t *testing.T) {
	dir := t.TempDir()
	save := func(p string, img image.Image) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
	}
	wide := image.NewGray(image.Rect(0, 0, 32, 16)) // black x < 8: outside the centre 16×16
	tall := image.NewGray(image.Rect(0, 0, 10, 20)) // white y < 5: outside the centre 10×10
	for y := range 16 {
		for x := 8; x < 32; x++ {
			wide.SetGray(x, y, color.Gray{Y: 255})
		}
	}
	for y := range 5 {
		for x := range 10 {
			tall.SetGray(x, y, color.Gray{Y: 255})
		}
	}
	save("train/w/a.png", wide)
	save("train/t/b.png", tall)
	save("test/w/c.png", wide)
	if _, _, err := Load("images", dir); err == nil || !strings.Contains(err.Error(), "a.png: 32×16 pixels") || !strings.Contains(err.Error(), "image_size") {
		t.Fatalf("mixed sizes without image_size: %v", err)
	}
	train, test, err := LoadWith("images", dir, FileOptions{ImageSize: [2]int{8, 8}})
	if err != nil {
		t.Fatal(err)
	}
	if train.Rows != 8 || train.Cols != 8 || train.Channels != 1 || test.Rows != 8 || len(test.Images) != 64 {
		t.Fatalf("train %d×%d×%d, test %d×%d, %d bytes", train.Rows, train.Cols, train.Channels, test.Rows, test.Cols, len(test.Images))
	}
	for i := range train.Len() {
		want := byte(255) // the wide one: white
		if train.ClassNames[train.Labels[i]] == "t" {
			want = 0
		}
		for _, v := range train.Images[i*64 : (i+1)*64] {
			if v != want {
				t.Fatalf("class %s: pixel %d in its centre, want %d", train.ClassNames[train.Labels[i]], v, want)
			}
		}
	}
	if _, _, err := LoadWith("csv", dir, FileOptions{ImageSize: [2]int{8, 8}}); err == nil || !strings.Contains(err.Error(), "for dataset images") {
		t.Errorf("image_size on a table: %v", err)
	}
}

// TestBadFiles: each bad input is refused naming the file and the row
// or field.
func TestBadFiles(t *testing.T) {
	cases := []struct {
		format string
		files  map[string]string
		want   string
	}{
		{"csv", map[string]string{"train.csv": "a,label\n1,0\nx,1\n", "test.csv": "a,label\n1,0\n"}, `train.csv:3: column "a": "x" is not a finite number`},
		{"csv", map[string]string{"train.csv": "a,label\n1,0\n2,300\n", "test.csv": "a,label\n1,0\n"}, `train.csv:3: label "300" is not a class number`},
		{"csv", map[string]string{"train.csv": "a,label\n1,0\n2\n", "test.csv": "a,label\n1,0\n"}, "train.csv: record on line 3: wrong number of fields"},
		{"csv", map[string]string{"train.csv": "a,label\n1,0\n"}, "no test split ("},
		{"npy", map[string]string{"train_x.npy": "garbage", "train_y.npy": "", "test_x.npy": "", "test_y.npy": ""}, "train_x.npy: not a NumPy .npy file"},
		{"npy", map[string]string{"train_x.npy": npy("<f4", []int{2, 1}, f32s(1, 2)), "train_y.npy": npy("<i8", []int{3}, i64s(0, 1, 0)),
			"test_x.npy": npy("<f4", []int{1, 1}, f32s(1)), "test_y.npy": npy("<i8", []int{1}, i64s(0))}, "train_y.npy: shape [3], want [2]"},
		{"npy", map[string]string{"train_x.npy": npy("<f4", []int{2, 1}, f32s(1)), "train_y.npy": "", "test_x.npy": "", "test_y.npy": ""}, "train_x.npy: 4 bytes of values for shape [2 1]"},
		{"images", map[string]string{"train/a/x.png": "not a png", "test/a/y.png": "x"}, "x.png: not a readable PNG or JPEG image"},
		{"npy", nil, "set the recipe's data_dir"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		for name, content := range c.files {
			write(t, filepath.Join(dir, name), content)
		}
		if c.files == nil {
			dir = ""
		}
		_, _, err := Load(c.format, dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want an error containing %q", c.format, keys(c.files), err, c.want)
		}
	}
}

// TestHeldOutTestSplit: a folder without a test file gets its test split
// held out of the training file — round(fraction·N) samples drawn by the
// split seed, the same ones for the same seed, others for another, every
// sample in exactly one split with its label; a fraction is refused where
// the folder has a test file, for a dataset with its own test split, and
// where a split would be empty.
func TestHeldOutTestSplit(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("v,label\n")
	for i := range 40 {
		fmt.Fprintf(&b, "%d,%d\n", i, i%3)
	}
	write(t, filepath.Join(dir, "train.csv"), b.String())
	split := func(opt FileOptions) (train, test map[float32]byte) {
		tr, te, err := LoadWith("csv", dir, opt)
		if err != nil {
			t.Fatal(err)
		}
		train, test = map[float32]byte{}, map[float32]byte{}
		for m, s := range map[*map[float32]byte]*Set{&train: tr, &test: te} {
			for i := range s.Len() {
				(*m)[s.Floats[i]] = s.Labels[i]
			}
		}
		return train, test
	}
	tr, te := split(FileOptions{TestFraction: 0.25, Seed: 7})
	if len(te) != 10 || len(tr) != 30 {
		t.Fatalf("%d training and %d test samples of 40 at 0.25", len(tr), len(te))
	}
	for v, l := range te {
		if _, both := tr[v]; both || int(l) != int(v)%3 {
			t.Fatalf("sample %v (label %d) in both splits or with another label", v, l)
		}
	}
	_, again := split(FileOptions{TestFraction: 0.25, Seed: 7})
	_, other := split(FileOptions{TestFraction: 0.25, Seed: 8})
	same := func(a, b map[float32]byte) bool {
		for v := range a {
			if _, ok := b[v]; !ok {
				return false
			}
		}
		return true
	}
	if !same(te, again) || same(te, other) {
		t.Error("the held-out samples are not a function of the split seed")
	}
	for _, c := range []struct {
		name, dir string
		opt       FileOptions
		want      string
	}{
		{"csv", dir, FileOptions{TestFraction: 0.01, Seed: 1}, "holds out 0"},
		{"mnist", "", FileOptions{TestFraction: 0.2}, "dataset mnist has its own"},
	} {
		if _, _, err := LoadWith(c.name, c.dir, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %+v: %v, want %q", c.name, c.opt, err, c.want)
		}
	}
	write(t, filepath.Join(dir, "test.csv"), "v,label\n1,0\n")
	if _, _, err := LoadWith("csv", dir, FileOptions{TestFraction: 0.25}); err == nil || !strings.Contains(err.Error(), "has its test split") {
		t.Errorf("a fraction beside a test file: %v", err)
	}
}

// TestValidationFraction: validation_fraction holds out that share of
// the training samples test_fraction leaves, drawn by the split seed: the
// three splits part the file, LoadWith's training set is LoadSplits',
// and a folder with a val file or a dataset other than your files refuse
// it.
func TestValidationFraction(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("v,label\n")
	for i := range 100 {
		fmt.Fprintf(&b, "%d,%d\n", i, i%4)
	}
	write(t, filepath.Join(dir, "train.csv"), b.String())
	values := func(s *Set) []float32 { return slices.Clone(s.Floats) }
	opt := FileOptions{TestFraction: 0.2, ValidationFraction: 0.25, Seed: 3}
	train, val, test, err := LoadSplits("csv", dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 60 || val.Len() != 20 || test.Len() != 20 || val.Name != "csv/val" {
		t.Fatalf("%d, %d and %d samples (%s)", train.Len(), val.Len(), test.Len(), val.Name)
	}
	seen := map[float32]bool{}
	for _, s := range []*Set{train, val, test} {
		for i, v := range s.Floats {
			if seen[v] || int(s.Labels[i]) != int(v)%4 {
				t.Fatalf("sample %v in two splits or with another label", v)
			}
			seen[v] = true
		}
	}
	tr, _, err := LoadWith("csv", dir, opt)
	if err != nil || !slices.Equal(values(tr), values(train)) {
		t.Fatalf("LoadWith's training set differs from LoadSplits' (%v)", err)
	}
	_, again, _, _ := LoadSplits("csv", dir, opt)
	opt.Seed = 4
	_, other, _, _ := LoadSplits("csv", dir, opt)
	if !slices.Equal(values(val), values(again)) || slices.Equal(values(val), values(other)) {
		t.Error("the validation samples are not a function of the split seed")
	}
	if _, _, _, err := LoadSplits("mnist", "", FileOptions{ValidationFraction: 0.1}); err == nil || !strings.Contains(err.Error(), "your own files") {
		t.Errorf("mnist with validation_fraction: %v", err)
	}
	write(t, filepath.Join(dir, "val.csv"), "v,label\n1,1\n")
	if _, _, _, err := LoadSplits("csv", dir, FileOptions{TestFraction: 0.2, ValidationFraction: 0.1}); err == nil || !strings.Contains(err.Error(), "has its validation split") {
		t.Errorf("a fraction beside a val file: %v", err)
	}
}

// TestValidationFile: a folder with a val file holds out its own
// validation split (OwnValidation), read like the others; a cluster ships
// it (FilesIn).
func TestValidationFile(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "train.csv"), "a,label\n1,0\n2,1\n3,0\n")
	write(t, filepath.Join(dir, "test.csv"), "a,label\n4,1\n")
	if OwnValidation("csv", dir) {
		t.Fatal("a folder without val.csv holds out its own validation split")
	}
	write(t, filepath.Join(dir, "val.csv"), "a,label\n5,1\n6,0\n")
	train, val, test, err := LoadSplits("csv", dir, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !OwnValidation("csv", dir) || train.Len() != 3 || val == nil || val.Len() != 2 || test.Len() != 1 || val.Floats[0] != 5 || val.Classes != 2 {
		t.Fatalf("train %d, val %+v, test %d", train.Len(), val, test.Len())
	}
	files, err := FilesIn("csv", dir)
	if err != nil || strings.Join(files, " ") != "train.csv val.csv test.csv" {
		t.Errorf("FilesIn: %v %v", files, err)
	}
	write(t, filepath.Join(dir, "val.csv"), "a,b,label\n5,5,1\n")
	if _, _, _, err := LoadSplits("csv", dir, FileOptions{}); err == nil || !strings.Contains(err.Error(), "validation samples of") {
		t.Errorf("a val file of another width: %v", err)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
