package data

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Language is one class of the language-identification set: the Debian
// package of fortune cookies that holds it.
type Language struct {
	Code    string // ISO 639-1
	Package string
}

// LangIDLanguages are the language-identification set's classes, in label
// order. fortunes-cs carries a few Slovak files, left out (LangIDOptions).
var LangIDLanguages = []Language{
	{"en", "fortunes"}, {"de", "fortunes-de"}, {"es", "fortunes-es"}, {"it", "fortunes-it"},
	{"pl", "fortunes-pl"}, {"ru", "fortunes-ru"}, {"cs", "fortunes-cs"}, {"pt", "fortunes-br"}, {"zh", "fortunes-zh"},
}

// LangIDOptions shape the language-identification set.
type LangIDOptions struct {
	// Window is the bytes per sample (64 by default); PerCookie caps the
	// windows taken from one cookie (4 by default), so long cookies do not
	// swamp the set; TestShare is the share of cookies held out (0.1).
	Window, PerCookie int
	TestShare         float64
	Seed              uint64
	// DpkgInfo is where dpkg lists each package's files (/var/lib/dpkg/info).
	DpkgInfo string
	// Languages are the classes (LangIDLanguages by default).
	Languages []Language
}

func (o *LangIDOptions) defaults() {
	if o.Window == 0 {
		o.Window = 64
	}
	if o.PerCookie == 0 {
		o.PerCookie = 4
	}
	if o.TestShare == 0 {
		o.TestShare = 0.1
	}
	if o.DpkgInfo == "" {
		o.DpkgInfo = "/var/lib/dpkg/info"
	}
	if o.Languages == nil {
		o.Languages = LangIDLanguages
	}
}

// LangIDCount is one language's samples and cookies in each split.
type LangIDCount struct {
	Language                  Language
	Files                     int
	TrainCookies, TestCookies int
	Train, Test               int
}

// LoadLangID builds the language-identification set from the fortune
// cookie packages: each file a package installs (dpkg's list of it, so
// that files of several packages in one folder get their own package's
// label) is split into cookies at its "%" lines, terminal escape sequences
// removed and white space collapsed; files that are mostly not letters
// (ASCII art) and links are left out. A cookie gives up to PerCookie
// windows of Window bytes (the last one zero-padded, if at least a quarter
// full), labelled by its language. Whole cookies go to the test split by a
// hash of the seed and the cookie's text: never the same cookie on both
// sides, even where two files hold it. The
// training samples are ordered by that hash too, so that a validation split
// taken from their end mixes the languages. Samples are Rows 1 × Cols
// Window byte values.
func LoadLangID(opts LangIDOptions) (train, test *Set, counts []LangIDCount, err error) {
	opts.defaults()
	type cookie struct {
		key   uint64
		label byte
		text  []byte
	}
	var trainC, testC []cookie
	if len(opts.Languages) > 256 || opts.Window < 1 || opts.PerCookie < 1 || !(opts.TestShare > 0 && opts.TestShare < 1) {
		return nil, nil, nil, fmt.Errorf("data: langid: %d languages, window %d, %d per cookie, test share %v", len(opts.Languages), opts.Window, opts.PerCookie, opts.TestShare)
	}
	for label, lang := range opts.Languages {
		files, err := packageFiles(opts.DpkgInfo, lang)
		if err != nil {
			return nil, nil, nil, err
		}
		c := LangIDCount{Language: lang}
		for _, f := range files {
			cookies, err := readCookies(f)
			if err != nil {
				return nil, nil, nil, err
			}
			if !mostlyLetters(cookies) {
				continue // ASCII art
			}
			c.Files++
			for _, text := range cookies {
				key := cookieKey(opts.Seed, text)
				ck := cookie{key, byte(label), text}
				if float64(key>>11)/(1<<53) < opts.TestShare {
					testC = append(testC, ck)
					c.TestCookies++
				} else {
					trainC = append(trainC, ck)
					c.TrainCookies++
				}
			}
		}
		if c.Files == 0 {
			return nil, nil, nil, fmt.Errorf("data: langid: package %s installs no fortune files with text (%s)", lang.Package, filepath.Join(opts.DpkgInfo, lang.Package+".list"))
		}
		counts = append(counts, c)
	}
	build := func(name string, cs []cookie, count func(*LangIDCount) *int) *Set {
		slices.SortFunc(cs, func(a, b cookie) int { return cmpU64(a.key, b.key) })
		s := &Set{Name: name, Rows: 1, Cols: opts.Window, Classes: len(opts.Languages)}
		for _, ck := range cs {
			for _, w := range windows(ck.text, opts.Window, opts.PerCookie) {
				s.Images = append(s.Images, w...)
				s.Labels = append(s.Labels, ck.label)
				(*count(&counts[ck.label]))++
			}
		}
		return s
	}
	train = build("langid/train", trainC, func(c *LangIDCount) *int { return &c.Train })
	test = build("langid/test", testC, func(c *LangIDCount) *int { return &c.Test })
	return train, test, counts, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// packageFiles lists the fortune files a package installs, from dpkg's
// list of it: regular files under a fortunes folder, not the .dat indexes
// nor the .u8 copies; Slovak files of fortunes-cs (its sk folder's links)
// left out.
func packageFiles(info string, lang Language) ([]string, error) {
	list := filepath.Join(info, lang.Package+".list")
	raw, err := os.ReadFile(list)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: langid: %s is not installed (%s is missing): apt-get install %s", ErrMissing, lang.Package, list, lang.Package)
	}
	if err != nil {
		return nil, fmt.Errorf("data: langid: %w", err)
	}
	slovak := map[string]bool{}
	var files []string
	for _, p := range strings.Split(string(raw), "\n") {
		if !strings.Contains(p, "/fortunes/") || strings.HasSuffix(p, ".dat") || strings.HasSuffix(p, ".u8") {
			continue
		}
		st, err := os.Lstat(p)
		switch {
		case err != nil:
			return nil, fmt.Errorf("data: langid: %s lists %s: %w", list, p, err)
		case st.Mode()&fs.ModeSymlink != 0:
			if strings.Contains(p, "/fortunes/sk/") {
				if t, err := filepath.EvalSymlinks(p); err == nil {
					slovak[t] = true
				}
			}
		case st.Mode().IsRegular():
			files = append(files, p)
		}
	}
	files = slices.DeleteFunc(files, func(f string) bool { return slovak[f] })
	slices.Sort(files)
	return files, nil
}

// readCookies splits a fortune file into its cookies, cleaned.
func readCookies(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: langid: %w", err)
	}
	defer f.Close()
	var out [][]byte
	var cur bytes.Buffer
	flush := func() {
		if t := cleanText(cur.Bytes()); len(t) > 0 {
			out = append(out, t)
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	for sc.Scan() {
		if bytes.Equal(bytes.TrimSpace(sc.Bytes()), []byte("%")) {
			flush()
			continue
		}
		cur.Write(sc.Bytes())
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("data: langid: %s: %w", path, err)
	}
	flush()
	return out, nil
}

// cleanText removes terminal escape sequences (ESC [ parameters and a
// final byte; ESC, intermediate bytes and a final byte) and control bytes,
// and collapses white space into single spaces.
func cleanText(b []byte) []byte {
	var out []byte
	space := true // drops leading space
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == 0x1b:
			i++
			if i < len(b) && b[i] == '[' { // CSI: parameters up to a final byte
				i++
				for i < len(b) && (b[i] < 0x40 || b[i] > 0x7e) {
					i++
				}
				continue
			}
			for i < len(b) && b[i] >= 0x20 && b[i] <= 0x2f { // intermediates, then the final byte
				i++
			}
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if !space {
				out = append(out, ' ')
				space = true
			}
			continue
		case c < 0x20 || c == 0x7f:
			continue
		}
		out = append(out, c)
		space = false
	}
	return bytes.TrimRight(out, " ")
}

// mostlyLetters says whether at least half of the cookies' non-space
// characters are letters (ASCII art is mostly not).
func mostlyLetters(cookies [][]byte) bool {
	letters, other := 0, 0
	for _, c := range cookies {
		for len(c) > 0 {
			r, n := utf8.DecodeRune(c)
			c = c[n:]
			switch {
			case unicode.IsLetter(r):
				letters++
			case !unicode.IsSpace(r):
				other++
			}
		}
	}
	return letters > 0 && letters >= other
}

// cookieKey is a cookie's hash under seed: its split and its order. It
// hashes the text, so that a cookie two files share lands on one side.
func cookieKey(seed uint64, text []byte) uint64 {
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
