package data

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
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
	// TrainPerCookie, when not 0, caps the training split's windows per
	// cookie instead of PerCookie: more of a long cookie's text to learn
	// from, the test split as it is.
	TrainPerCookie int
	TestShare      float64
	Seed           uint64
	// DpkgInfo is where dpkg lists each package's files (/var/lib/dpkg/info).
	DpkgInfo string
	// Languages are the classes (LangIDLanguages by default).
	Languages []Language
}

// LoadLangID builds the language-identification set from the fortune
// cookie packages: each file a package installs (dpkg's list of it, so
// that files of several packages in one folder get their own package's
// label) is split into cookies at its "%" lines, terminal escape sequences
// removed and white space collapsed; files that are mostly not letters
// (ASCII art) and links are left out. The cookies are the documents of a
// text set (TextOptions: windows of bytes, whole cookies held out); each
// language's count is reported under its code.
func LoadLangID(opts LangIDOptions) (train, test *Set, counts []TextCount, err error) {
	if opts.DpkgInfo == "" {
		opts.DpkgInfo = "/var/lib/dpkg/info"
	}
	if opts.Languages == nil {
		opts.Languages = LangIDLanguages
	}
	var classes []textClass
	for _, lang := range opts.Languages {
		files, err := packageFiles(opts.DpkgInfo, lang)
		if err != nil {
			return nil, nil, nil, err
		}
		c := textClass{name: lang.Code}
		for _, f := range files {
			cookies, err := readCookies(f)
			if err != nil {
				return nil, nil, nil, err
			}
			if !mostlyLetters(cookies) {
				continue // ASCII art
			}
			c.files++
			c.docs = append(c.docs, cookies...)
		}
		if c.files == 0 {
			return nil, nil, nil, fmt.Errorf("data: langid: package %s installs no fortune files with text (%s)", lang.Package, filepath.Join(opts.DpkgInfo, lang.Package+".list"))
		}
		classes = append(classes, c)
	}
	return textSet("langid", classes, TextOptions{Window: opts.Window, PerDoc: opts.PerCookie, TrainPerDoc: opts.TrainPerCookie, TestShare: opts.TestShare, Seed: opts.Seed})
}

// packageFiles lists the fortune files a package installs, from dpkg's
// list of it: regular files under games/fortunes (not its documentation),
// not the .dat indexes nor the .u8 copies; Slovak files of fortunes-cs (its sk folder's links)
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
		if !strings.Contains(p, "/games/fortunes/") || strings.HasSuffix(p, ".dat") || strings.HasSuffix(p, ".u8") {
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
