package data

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// TextOptions shape a text classification set: its documents (cookies,
// paragraphs) cut into windows of bytes, whole documents held out for test.
type TextOptions struct {
	// Window is the bytes per sample (64 by default); PerDoc caps the
	// windows one document gives (4 by default), so that long documents do
	// not swamp the set; TestShare is the share of documents held out
	// (0.1).
	Window, PerDoc int
	// TrainPerDoc, when not 0, caps the training split's windows per
	// document instead of PerDoc (the test split keeps PerDoc's).
	TrainPerDoc int
	TestShare   float64
	Seed        uint64
}

// TextCount is one class's files, documents and samples in each split.
type TextCount struct {
	Class               string
	Files               int
	TrainDocs, TestDocs int
	Train, Test         int
}

// textClass is a class's documents, cleaned.
type textClass struct {
	name  string
	files int
	docs  [][]byte
}

// textSet builds the training and test sets of a text classification:
// each document gives up to PerDoc windows of Window bytes (the last one
// zero-padded, if at least a quarter full), labelled by its class; whole
// documents go to test by a hash of the seed and the document's text —
// never the same document on both sides, even where two files hold it.
// Training samples are ordered by that hash too, so that a validation
// split taken from their end mixes the classes. Samples are Rows 1 × Cols
// Window byte values.
func textSet(name string, classes []textClass, o TextOptions) (train, test *Set, counts []TextCount, err error) {
	if o.Window == 0 {
		o.Window = 64
	}
	if o.PerDoc == 0 {
		o.PerDoc = 4
	}
	if o.TestShare == 0 {
		o.TestShare = 0.1
	}
	if len(classes) > 256 || len(classes) < 2 || o.Window < 1 || o.PerDoc < 1 || !(o.TestShare > 0 && o.TestShare < 1) {
		return nil, nil, nil, fmt.Errorf("data: %s: %d classes (2 to 256), window %d, %d per document, test share %v", name, len(classes), o.Window, o.PerDoc, o.TestShare)
	}
	type doc struct {
		key   uint64
		label byte
		text  []byte
	}
	var trainD, testD []doc
	for label, c := range classes {
		counts = append(counts, TextCount{Class: c.name, Files: c.files})
		for _, text := range c.docs {
			d := doc{docKey(o.Seed, text), byte(label), text}
			if float64(d.key>>11)/(1<<53) < o.TestShare {
				testD = append(testD, d)
				counts[label].TestDocs++
			} else {
				trainD = append(trainD, d)
				counts[label].TrainDocs++
			}
		}
	}
	build := func(split string, ds []doc, most int, count func(*TextCount) *int) *Set {
		slices.SortFunc(ds, func(a, b doc) int {
			switch {
			case a.key < b.key:
				return -1
			case a.key > b.key:
				return 1
			}
			return 0
		})
		s := &Set{Name: name + "/" + split, Rows: 1, Cols: o.Window, Classes: len(classes)}
		for _, c := range classes {
			s.ClassNames = append(s.ClassNames, c.name)
		}
		for _, d := range ds {
			for _, w := range windows(d.text, o.Window, most) {
				s.Images = append(s.Images, w...)
				s.Labels = append(s.Labels, d.label)
				(*count(&counts[d.label]))++
			}
		}
		return s
	}
	trainMost := o.PerDoc
	if o.TrainPerDoc > 0 {
		trainMost = o.TrainPerDoc
	}
	train = build("train", trainD, trainMost, func(c *TextCount) *int { return &c.Train })
	test = build("test", testD, o.PerDoc, func(c *TextCount) *int { return &c.Test })
	return train, test, counts, nil
}

// docKey is a document's hash under seed: its split and its order. It
// hashes the text, so that a document two files share lands on one side.
func docKey(seed uint64, text []byte) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%s", seed, text)
	z := h.Sum64()
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9 // mix the low bits up
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// windows cuts text into up to most windows of n bytes, the last one
// zero-padded when it holds at least n/4 bytes (a shorter text gives one
// padded window if it holds any).
func windows(text []byte, n, most int) [][]byte {
	var out [][]byte
	for lo := 0; lo < len(text) && len(out) < most; lo += n {
		w := make([]byte, n)
		k := copy(w, text[lo:])
		if k < n && k < n/4 && lo > 0 {
			break
		}
		out = append(out, w)
	}
	return out
}

// LoadTextDir builds a text classification set from a folder of UTF-8
// files, one per class (named by the file, its extension dropped; in name
// order): each file's paragraphs (separated by blank lines), white space
// collapsed, are its documents.
func LoadTextDir(dir string, o TextOptions) (train, test *Set, counts []TextCount, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("data: text folder: %w", err)
	}
	var classes []textClass
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("data: text folder: %w", err)
		}
		if err := validUTF8(path, raw); err != nil {
			return nil, nil, nil, err
		}
		c := textClass{name: strings.TrimSuffix(e.Name(), filepath.Ext(e.Name())), files: 1}
		for _, p := range bytes.Split(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n\n")) {
			if t := cleanText(p); len(t) > 0 {
				c.docs = append(c.docs, t)
			}
		}
		if len(c.docs) == 0 {
			return nil, nil, nil, fmt.Errorf("data: text folder: %s holds no text", path)
		}
		classes = append(classes, c)
	}
	if len(classes) < 2 {
		return nil, nil, nil, fmt.Errorf("data: text folder %s: %d files, want one per class and at least 2", dir, len(classes))
	}
	return textSet(filepath.Base(dir), classes, o)
}

// validUTF8 names the byte offset of a file's first invalid UTF-8.
func validUTF8(path string, b []byte) error {
	for off := 0; off < len(b); {
		r, n := utf8.DecodeRune(b[off:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Errorf("data: %s: byte offset %d is not UTF-8", path, off)
		}
		off += n
	}
	return nil
}

// LoadTextFile reads one UTF-8 file as a character corpus: its first 80 %
// for training, the next 10 % for validation, the last 10 % for test, cut
// at line ends.
func LoadTextFile(path string) (*Corpus, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: text file %s", ErrMissing, path)
	}
	if err != nil {
		return nil, fmt.Errorf("data: text file: %w", err)
	}
	if err := validUTF8(path, raw); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, fmt.Errorf("data: text file %s is empty", path)
	}
	cut := func(share float64) int {
		i := int(share * float64(len(raw)))
		if j := bytes.IndexByte(raw[i:], '\n'); j >= 0 {
			return i + j + 1
		}
		return len(raw)
	}
	a, b := cut(0.8), cut(0.9)
	if a == len(raw) || b == len(raw) || a == b {
		return nil, fmt.Errorf("data: text file %s: too few lines to hold out a tenth for validation and a tenth for test", path)
	}
	return &Corpus{Name: strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), Train: raw[:a], Val: raw[a:b], Test: raw[b:]}, nil
}
