package data

import (
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // image folders: JPEG
	_ "image/png"  // image folders: PNG
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/image/draw"
)

// A user's own data, from a folder (a recipe's data_dir):
//
//   - "csv": train.csv and test.csv, a header row, numeric features and a
//     label column (named "label", or the last one) of class numbers;
//   - "npy": NumPy arrays train_x.npy, train_y.npy, test_x.npy, test_y.npy —
//     x [N, F], [N, H, W] or [N, C, H, W] (channels first, as PyTorch holds
//     images) of uint8 (pixels, scaled by 1/255 as lathe's image sets are) or
//     float32/float64 (used as they are); y [N] of integer class numbers;
//   - "images": train/<class>/ and test/<class>/ folders of PNG or JPEG
//     images, one size (a class is its folder's name, in sorted order),
//     grey or RGB;
//   - "arrow", "parquet": tables (arrowfiles.go).
//
// The training samples are shuffled once (a fixed seed) so that the
// validation split, the training set's last samples, holds every class.
// Bad input is an error naming the file, the row or the field.

// FileFormats are the dataset names of a user's own files.
var FileFormats = []string{"csv", "npy", "images", "arrow", "parquet"}

// IsFiles says whether a dataset is a user's own files.
func IsFiles(name string) bool { return slices.Contains(FileFormats, name) }

// FileOptions say how a user's files are read: where the folder holds no
// test file, the fraction of the training file's samples held out as the
// test split; where it holds no validation file, the fraction of the
// training samples left held out as the validation split (LoadSplits);
// both drawn by Seed (the same samples for every run with the same
// options, whatever the training seed); for image folders, the size
// [rows, cols] every image is brought to (scaled to cover it, the centre
// cropped: torchvision's Resize then CenterCrop), none: all of one size
// already.
type FileOptions struct {
	TestFraction       float64 `json:"test_fraction,omitempty"`
	ValidationFraction float64 `json:"validation_fraction,omitempty"`
	Seed               uint64  `json:"split_seed,omitempty"`
	ImageSize          [2]int  `json:"image_size,omitzero"`
	// TrainWindows, for a text classification set (langid, a text
	// folder), caps the windows each training document gives (0: as many
	// as the test split's, 4); the test split is the same whatever it is.
	TrainWindows int `json:"train_windows,omitempty"`
}

// FilesIn lists the files of a user's dataset in dir that LoadFiles
// reads, relative to dir (slash-separated): what a cluster ships to its
// workers.
func FilesIn(format, dir string) ([]string, error) {
	if !IsFiles(format) {
		return nil, fmt.Errorf("data: %s is not a format of your own files (%s)", format, strings.Join(FileFormats, ", "))
	}
	var out []string
	for _, split := range []string{"train", "val", "test"} {
		var names []string
		switch format {
		case "csv":
			names = []string{split + ".csv"}
		case "npy":
			names = []string{split + "_x.npy", split + "_y.npy"}
		case "arrow", "parquet":
			names = []string{split + "." + format}
		case "images":
			err := filepath.WalkDir(filepath.Join(dir, split), func(p string, d os.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if ext := strings.ToLower(filepath.Ext(p)); d.Type().IsRegular() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg") {
					rel, err := filepath.Rel(dir, p)
					names = append(names, filepath.ToSlash(rel))
					return err
				}
				return nil
			})
			if err != nil && !(split != "train" && errors.Is(err, os.ErrNotExist)) {
				return nil, fmt.Errorf("data: %w", err)
			}
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
				out = append(out, n)
			} else if split == "train" {
				return nil, fmt.Errorf("data: %w", err)
			}
		}
	}
	return out, nil
}

// splitFile is where a format keeps a split ("train", "val", "test") in
// dir: what says the split is there.
func splitFile(format, dir, split string) string {
	switch format {
	case "csv":
		return filepath.Join(dir, split+".csv")
	case "npy":
		return filepath.Join(dir, split+"_x.npy")
	case "images":
		return filepath.Join(dir, split)
	}
	return filepath.Join(dir, split+"."+format) // arrow, parquet
}

func testFile(format, dir string) string { return splitFile(format, dir, "test") }

// LoadFiles reads a user's training and test sets from dir: the test set
// from its test file, or — where there is none and opt says so — held out
// from the training file.
func LoadFiles(format, dir string, opt FileOptions) (train, test *Set, err error) {
	train, _, test, err = loadFiles(format, dir, opt)
	return train, test, err
}

// loadFiles is LoadFiles with the validation split opt holds out of the
// training samples (nil when it holds none out).
func loadFiles(format, dir string, opt FileOptions) (train, val, test *Set, err error) {
	train, test, err = loadTrainTest(format, dir, opt)
	if err != nil || opt.ValidationFraction == 0 {
		return train, nil, test, err
	}
	if _, err := os.Stat(splitFile(format, dir, "val")); err == nil {
		return nil, nil, nil, fmt.Errorf("data: %s has its validation split (%s); validation_fraction holds one out only where the folder has none", dir, splitFile(format, dir, "val"))
	}
	if train, val, err = holdOut(train, "validation_fraction", opt.ValidationFraction, opt.Seed, 0x56414c4944); err != nil { // "VALID"
		return nil, nil, nil, err
	}
	train.Name, val.Name = format+"/train", format+"/val"
	return train, val, test, nil
}

func loadTrainTest(format, dir string, opt FileOptions) (train, test *Set, err error) {
	if dir == "" {
		return nil, nil, fmt.Errorf("data: dataset %s reads your files from a folder: set the recipe's data_dir or pass --data-dir", format)
	}
	if !IsFiles(format) {
		return nil, nil, fmt.Errorf("data: unknown file format %q (%s)", format, strings.Join(FileFormats, ", "))
	}
	if !(opt.TestFraction >= 0 && opt.TestFraction < 1) || !(opt.ValidationFraction >= 0 && opt.ValidationFraction < 1) {
		return nil, nil, fmt.Errorf("data: test_fraction %g, validation_fraction %g: fractions in [0, 1)", opt.TestFraction, opt.ValidationFraction)
	}
	if sz := opt.ImageSize; sz != [2]int{} && (format != "images" || sz[0] < 1 || sz[1] < 1 || sz[0] > 4096 || sz[1] > 4096) {
		return nil, nil, fmt.Errorf("data: image_size %v: rows and columns in [1, 4096], for dataset images (not %s)", sz, format)
	}
	_, statErr := os.Stat(testFile(format, dir))
	hasTest := statErr == nil
	switch {
	case hasTest && opt.TestFraction > 0:
		return nil, nil, fmt.Errorf("data: %s has its test split (%s); test_fraction holds one out only where the folder has none", dir, testFile(format, dir))
	case !hasTest && opt.TestFraction == 0:
		return nil, nil, fmt.Errorf("data: %s: no test split (%s): add one, or set test_fraction to hold out a fraction of the training samples", dir, testFile(format, dir))
	}
	if train, err = loadFileSplit(format, dir, "train", nil, opt.ImageSize); err != nil {
		return nil, nil, err
	}
	if hasTest {
		test, err = loadFileSplit(format, dir, "test", train, opt.ImageSize)
	} else {
		train, test, err = holdOut(train, "test_fraction", opt.TestFraction, opt.Seed, 0x53504c4954) // "SPLIT"
	}
	if err != nil {
		return nil, nil, err
	}
	train.Name, test.Name = format+"/train", format+"/test"
	if train.Features() != test.Features() || train.Channels != test.Channels {
		return nil, nil, fmt.Errorf("data: %s: training samples of %d×%d×%d, test samples of %d×%d×%d", dir, train.Channels, train.Rows, train.Cols, test.Channels, test.Rows, test.Cols)
	}
	classes := max(train.Classes, test.Classes)
	train.Classes, test.Classes = classes, classes
	if test.ClassNames == nil {
		test.ClassNames = train.ClassNames
	}
	shuffle(train)
	return train, test, nil
}

// loadFileSplit reads one split ("train" or "test") of a user's files;
// like, for the test split, is the training set (an image folder's
// classes and size); size, the images' (FileOptions.ImageSize).
func loadFileSplit(format, dir, split string, like *Set, size [2]int) (*Set, error) {
	switch format {
	case "csv":
		return loadCSV(filepath.Join(dir, split+".csv"))
	case "npy":
		return loadNPY(dir, split)
	case "images":
		return loadImageSplit(dir, split, like, size)
	}
	return loadTable(format, dir, split)
}

// holdOut takes round(fraction·N) of the samples, drawn by the seed (and
// stream, one per split), as another split; the rest, in their order,
// stay the training set. field names the fraction in errors.
func holdOut(s *Set, field string, fraction float64, seed, stream uint64) (train, held *Set, err error) {
	n := s.Len()
	k := int(math.Round(fraction * float64(n)))
	if k < 1 || k >= n {
		return nil, nil, fmt.Errorf("data: %s %g of %d samples holds out %d: leave at least one sample in each split", field, fraction, n, k)
	}
	perm := rand.New(rand.NewPCG(seed, stream)).Perm(n)
	inTest := make([]bool, n)
	for _, i := range perm[:k] {
		inTest[i] = true
	}
	var tr, te []int
	for i := range n {
		if inTest[i] {
			te = append(te, i)
		} else {
			tr = append(tr, i)
		}
	}
	return pick(s, tr), pick(s, te), nil
}

// pick is a copy of the samples idx of s, in that order.
func pick(s *Set, idx []int) *Set {
	out := *s
	f, p := s.Features(), s.LabelsPer()
	out.Labels, out.Images, out.Floats = make([]byte, 0, len(idx)*p), nil, nil
	for _, i := range idx {
		out.Labels = append(out.Labels, s.Labels[i*p:(i+1)*p]...)
		if s.Floats != nil {
			out.Floats = append(out.Floats, s.Floats[i*f:(i+1)*f]...)
		} else {
			out.Images = append(out.Images, s.Images[i*f:(i+1)*f]...)
		}
	}
	return &out
}

// shuffle reorders a set's samples once, with a fixed seed.
func shuffle(s *Set) {
	*s = *pick(s, rand.New(rand.NewPCG(1, 2)).Perm(s.Len()))
}

// loadCSV reads a CSV file: a header, numeric features, a label column.
func loadCSV(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("data: %s: reading its header: %w", path, err)
	}
	header = slices.Clone(header)
	label := len(header) - 1
	for i, h := range header {
		if strings.EqualFold(strings.TrimSpace(h), "label") {
			label = i
		}
	}
	if len(header) < 2 {
		return nil, fmt.Errorf("data: %s: a header of %d column; want features and a label", path, len(header))
	}
	s := &Set{Rows: 1, Cols: len(header) - 1, Floats: []float32{}}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", path, err)
		}
		for i, v := range rec {
			v = strings.TrimSpace(v)
			if i == label {
				c, err := strconv.Atoi(v)
				if err != nil || c < 0 || c > 255 {
					return nil, fmt.Errorf("data: %s:%d: label %q is not a class number (0 to 255)", path, line, v)
				}
				s.Labels = append(s.Labels, byte(c))
				s.Classes = max(s.Classes, c+1)
				continue
			}
			x, err := strconv.ParseFloat(v, 32)
			if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("data: %s:%d: column %q: %q is not a finite number", path, line, header[i], v)
			}
			s.Floats = append(s.Floats, float32(x))
		}
	}
	if s.Len() == 0 {
		return nil, fmt.Errorf("data: %s: no rows after the header", path)
	}
	return s, nil
}

// loadNPY reads one split's SPLIT_x.npy and SPLIT_y.npy.
func loadNPY(dir, split string) (*Set, error) {
	x, xs, err := readNPY(filepath.Join(dir, split+"_x.npy"))
	if err != nil {
		return nil, err
	}
	y, ys, err := readNPY(filepath.Join(dir, split+"_y.npy"))
	if err != nil {
		return nil, err
	}
	return npySet(x, xs, y, ys, filepath.Join(dir, split))
}

// npyArray is a NumPy array's values: bytes (uint8), floats or integers.
type npyArray struct {
	bytes  []byte
	floats []float32
	ints   []int64
}

var npyHeader = regexp.MustCompile(`'descr':\s*'([<>|=]?)([uif])(\d+)'.*'fortran_order':\s*(True|False).*'shape':\s*\(([\d,\s]*)\)`)

// readNPY reads a .npy file (format 1, 2 or 3) of uint8, int, or float
// values in C order.
func readNPY(path string) (*npyArray, []int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		return nil, nil, fmt.Errorf("data: %s: not a NumPy .npy file", path)
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, nil, fmt.Errorf("data: %s: truncated header", path)
		}
		hlen, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	default:
		return nil, nil, fmt.Errorf("data: %s: .npy format version %d", path, b[6])
	}
	if off+hlen > len(b) {
		return nil, nil, fmt.Errorf("data: %s: truncated header", path)
	}
	m := npyHeader.FindStringSubmatch(string(b[off : off+hlen]))
	if m == nil {
		return nil, nil, fmt.Errorf("data: %s: header %q: want descr, fortran_order and shape", path, strings.TrimSpace(string(b[off:off+hlen])))
	}
	if m[4] == "True" {
		return nil, nil, fmt.Errorf("data: %s: a Fortran-order array (save it in C order: np.ascontiguousarray)", path)
	}
	if m[1] == ">" {
		return nil, nil, fmt.Errorf("data: %s: big-endian values", path)
	}
	var shape []int
	n := 1
	for _, d := range strings.Split(m[5], ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		v, err := strconv.Atoi(d)
		if err != nil || v < 0 || (v > 0 && n > len(b)/v) {
			return nil, nil, fmt.Errorf("data: %s: shape %q (for a file of %d bytes)", path, m[5], len(b))
		}
		shape, n = append(shape, v), n*v
	}
	width, _ := strconv.Atoi(m[3])
	data := b[off+hlen:]
	if len(data) != n*width {
		return nil, nil, fmt.Errorf("data: %s: %d bytes of values for shape %v of %d-byte %s", path, len(data), shape, width, m[2])
	}
	a := &npyArray{}
	switch kind := m[2] + m[3]; kind {
	case "u1":
		a.bytes = data
	case "f4", "f8":
		a.floats = make([]float32, n)
		for i := range a.floats {
			if width == 4 {
				a.floats[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			} else {
				a.floats[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
			}
		}
	case "i1", "i2", "i4", "i8", "u2", "u4", "u8":
		a.ints = make([]int64, n)
		for i := range a.ints {
			switch kind {
			case "i1":
				a.ints[i] = int64(int8(data[i]))
			case "i2", "u2":
				a.ints[i] = int64(binary.LittleEndian.Uint16(data[2*i:]))
				if kind == "i2" {
					a.ints[i] = int64(int16(a.ints[i]))
				}
			case "i4", "u4":
				a.ints[i] = int64(binary.LittleEndian.Uint32(data[4*i:]))
				if kind == "i4" {
					a.ints[i] = int64(int32(a.ints[i]))
				}
			default:
				a.ints[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
			}
		}
	default:
		return nil, nil, fmt.Errorf("data: %s: values of type %s (lathe reads uint8, integers, float32 and float64)", path, kind)
	}
	return a, shape, nil
}

// npySet makes a set of a features array and a labels array.
func npySet(x *npyArray, xs []int, y *npyArray, ys []int, name string) (*Set, error) {
	if len(xs) < 2 || len(xs) > 4 {
		return nil, fmt.Errorf("data: %s_x.npy: shape %v (want [N, F], [N, H, W] or [N, C, H, W])", name, xs)
	}
	n := xs[0]
	if len(ys) != 1 || ys[0] != n {
		return nil, fmt.Errorf("data: %s_y.npy: shape %v, want [%d] (one label per sample of %s_x.npy)", name, ys, n, name)
	}
	s := &Set{Rows: 1, Cols: xs[1]}
	switch len(xs) {
	case 3:
		s.Rows, s.Cols = xs[1], xs[2]
	case 4:
		s.Channels, s.Rows, s.Cols = xs[1], xs[2], xs[3]
	}
	f := s.Features()
	switch {
	case x.bytes != nil:
		s.Images = channelsLast(x.bytes, n, s.Channels, f)
	case x.floats != nil:
		s.Floats = channelsLast(x.floats, n, s.Channels, f)
	default:
		return nil, fmt.Errorf("data: %s_x.npy: integer features; save them as uint8 pixels or as floats", name)
	}
	labels := y.ints
	if y.bytes != nil {
		labels = make([]int64, len(y.bytes))
		for i, v := range y.bytes {
			labels[i] = int64(v)
		}
	}
	if labels == nil {
		return nil, fmt.Errorf("data: %s_y.npy: float labels; save class numbers as integers", name)
	}
	s.Labels = make([]byte, n)
	for i, l := range labels {
		if l < 0 || l > 255 {
			return nil, fmt.Errorf("data: %s_y.npy: row %d: label %d is not a class number (0 to 255)", name, i, l)
		}
		s.Labels[i] = byte(l)
		s.Classes = max(s.Classes, int(l)+1)
	}
	return s, nil
}

// channelsLast reorders n samples of f values from [C, H·W] to lathe's
// [H·W, C].
func channelsLast[T byte | float32](x []T, n, c, f int) []T {
	if c <= 1 {
		return x
	}
	out := make([]T, len(x))
	hw := f / c
	for s := range n {
		for ch := range c {
			for p := range hw {
				out[s*f+p*c+ch] = x[s*f+ch*hw+p]
			}
		}
	}
	return out
}

// loadImageSplit reads train/<class>/ (like nil) or test/<class>/, whose
// classes must be the training set like's.
func loadImageSplit(dir, split string, like *Set, size [2]int) (*Set, error) {
	classes, err := classFolders(filepath.Join(dir, split))
	if err != nil {
		return nil, err
	}
	if like != nil {
		for _, c := range classes {
			if !slices.Contains(like.ClassNames, c) {
				return nil, fmt.Errorf("data: %s: class %q has no training folder", filepath.Join(dir, split, c), c)
			}
		}
		classes = like.ClassNames
	}
	return loadImages(filepath.Join(dir, split), classes, like, size)
}

func classFolders(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("data: %w (an image dataset holds train/<class>/ and test/<class>/ folders)", err)
	}
	var out []string
	for _, e := range es {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 || len(out) > 256 {
		return nil, fmt.Errorf("data: %s: %d class folders (want 1 to 256)", dir, len(out))
	}
	return out, nil // ReadDir sorts by name
}

// loadImages reads every class folder's images; like (when set) fixes the
// size and channels (the training set's); size, when set, the size each
// image is brought to.
func loadImages(dir string, classes []string, like *Set, size [2]int) (*Set, error) {
	s := &Set{Classes: len(classes), ClassNames: classes}
	if like != nil {
		s.Rows, s.Cols, s.Channels = like.Rows, like.Cols, like.Channels
	}
	for ci, c := range classes {
		es, err := os.ReadDir(filepath.Join(dir, c))
		if errors.Is(err, os.ErrNotExist) && like != nil {
			continue // a test set without this class
		}
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		for _, e := range es {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if e.IsDir() || (ext != ".png" && ext != ".jpg" && ext != ".jpeg") {
				continue
			}
			path := filepath.Join(dir, c, e.Name())
			if err := s.addImage(path, size); err != nil {
				return nil, err
			}
			s.Labels = append(s.Labels, byte(ci))
		}
	}
	if s.Len() == 0 {
		return nil, fmt.Errorf("data: %s: no PNG or JPEG images in its class folders", dir)
	}
	return s, nil
}

// addImage decodes one image into the set: grey (1 channel) or RGB (3),
// as the first image is.
func (s *Set) addImage(path string, size [2]int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return fmt.Errorf("data: %s: not a readable PNG or JPEG image: %w", path, err)
	}
	b := img.Bounds()
	if s.Rows == 0 {
		s.Rows, s.Cols, s.Channels = b.Dy(), b.Dx(), 3
		if m := img.ColorModel(); m == color.GrayModel || m == color.Gray16Model {
			s.Channels = 1
		}
		if size != [2]int{} {
			s.Rows, s.Cols = size[0], size[1]
		}
	}
	if size != [2]int{} && (b.Dy() != size[0] || b.Dx() != size[1]) {
		img = fit(img, size[0], size[1], s.Channels)
		b = img.Bounds()
	}
	if b.Dy() != s.Rows || b.Dx() != s.Cols {
		return fmt.Errorf("data: %s: %d×%d pixels, the dataset's images are %d×%d (resize them to one size, or set image_size)", path, b.Dx(), b.Dy(), s.Cols, s.Rows)
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if s.Channels == 1 {
				s.Images = append(s.Images, color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
				continue
			}
			r, g, bl, _ := img.At(x, y).RGBA()
			s.Images = append(s.Images, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return nil
}

// fit scales img to cover rows×cols and keeps the centre (torchvision's
// Resize then CenterCrop): the largest centred rectangle of the target's
// aspect, scaled by Catmull-Rom, into a grey image for one channel.
func fit(img image.Image, rows, cols, channels int) image.Image {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	cw, ch := w, w*rows/cols
	if ch > h {
		cw, ch = h*cols/rows, h
	}
	cw, ch = max(cw, 1), max(ch, 1)
	x0, y0 := b.Min.X+(w-cw)/2, b.Min.Y+(h-ch)/2
	src := image.Rect(x0, y0, x0+cw, y0+ch)
	var dst draw.Image = image.NewRGBA(image.Rect(0, 0, cols, rows))
	if channels == 1 {
		dst = image.NewGray(image.Rect(0, 0, cols, rows))
	}
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, src, draw.Src, nil)
	return dst
}
