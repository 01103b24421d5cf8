package data

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakePackages writes fortune files and dpkg lists for two languages
// under a temporary root: "aa" holds the cookies given, "bb" a file of its
// own and an ASCII-art file, both in one folder.
func fakePackages(t *testing.T, aa []string) (info string, langs []Language) {
	t.Helper()
	root := t.TempDir()
	info = filepath.Join(root, "info")
	share := filepath.Join(root, "share", "games", "fortunes")
	for _, d := range []string{info, share} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, text string) string {
		p := filepath.Join(share, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("alpha", strings.Join(aa, "\n%\n")+"\n")
	b := write("beta", "Ein Satz mit \x1b[33mFarbe\x1b[m und\tLeerraum.\n%\nNoch einer.\n")
	art := write("art", "  /\\_/\\  \n ( o.o ) \n  > ^ <  \n%\n ||| --- ||| \n")
	if err := os.WriteFile(filepath.Join(share, "alpha.dat"), []byte{1, 2}, 0o644); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(root, "doc", "fortunes", "README") // documentation: never a cookie file
	if err := os.MkdirAll(filepath.Dir(doc), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(doc, []byte("Plain English documentation text.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lists := map[string][]string{"pkg-aa": {share, a, a + ".dat"}, "pkg-bb": {share, b, art, doc}}
	for pkg, files := range lists {
		if err := os.WriteFile(filepath.Join(info, pkg+".list"), []byte(strings.Join(files, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return info, []Language{{"aa", "pkg-aa"}, {"bb", "pkg-bb"}}
}

// TestLangIDSplitsByCookie: each cookie's windows all land on one side,
// duplicates included; the split and order are a function of the seed;
// labels follow the package; escapes are gone and ASCII art left out.
func TestLangIDSplitsByCookie(t *testing.T) {
	var cookies []string
	for i := range 200 {
		cookies = append(cookies, strings.Repeat(string(rune('a'+i%26)), 40+i%150)+" cookie "+string(rune('A'+i/26)))
	}
	cookies = append(cookies, cookies[:20]...) // a cookie twice: one side still
	info, langs := fakePackages(t, cookies)
	opts := LangIDOptions{Window: 32, PerCookie: 3, TestShare: 0.3, Seed: 5, DpkgInfo: info, Languages: langs}
	train, test, counts, err := LoadLangID(opts)
	if err != nil {
		t.Fatal(err)
	}
	if counts[0].Files != 1 || counts[1].Files != 1 {
		t.Fatalf("files counted %+v: the .dat index, the documentation and the ASCII art must be left out", counts)
	}
	if counts[0].TestDocs < 30 || counts[0].TrainDocs < 100 || train.Len() != counts[0].Train+counts[1].Train {
		t.Fatalf("counts %+v, %d training samples", counts, train.Len())
	}
	side := map[string]string{}
	for name, s := range map[string]*Set{"train": train, "test": test} {
		for i := range s.Len() {
			w := s.Images[i*32 : (i+1)*32]
			if s.Labels[i] == 1 {
				if bytes.Contains(w, []byte{0x1b}) || bytes.Contains(w, []byte("  ")) || bytes.Contains(w, []byte("o.o")) {
					t.Fatalf("%s sample %d of bb: %q", name, i, w)
				}
				continue
			}
			key := string(bytes.TrimRight(w, "\x00"))
			key = key[:min(len(key), 12)] // a cookie's first window starts with its own text
			if other, ok := side[key]; ok && other != name && strings.Contains(key, "cookie") {
				t.Fatalf("cookie starting %q on both sides", key)
			}
			side[key] = name
		}
	}
	again, _, _, err := LoadLangID(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Images, train.Images) || !bytes.Equal(again.Labels, train.Labels) {
		t.Fatal("the same seed gave another training set")
	}
	opts.Seed = 6
	other, _, _, err := LoadLangID(opts)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.Images, train.Images) {
		t.Fatal("another seed gave the same training set")
	}
}

// TestLangIDWindows: a cookie gives at most PerCookie windows, the last
// zero-padded when a quarter full.
func TestLangIDWindows(t *testing.T) {
	if w := windows([]byte(strings.Repeat("x", 70)), 32, 5); len(w) != 2 {
		t.Fatalf("70 bytes in windows of 32: %q", w) // 32 + 32 + 6 (under a quarter: dropped)
	}
	text := []byte(strings.Repeat("x", 74))
	if w := windows(text, 32, 5); len(w) != 3 || w[2][9] != 'x' || w[2][10] != 0 {
		t.Fatalf("74 bytes in windows of 32: %q", w) // 32 + 32 + 10, padded
	}
	if w := windows(text, 32, 1); len(w) != 1 {
		t.Fatalf("capped at 1: %d windows", len(w))
	}
	if w := windows([]byte("hi"), 32, 4); len(w) != 1 || w[0][2] != 0 {
		t.Fatalf("a short cookie: %q", w)
	}
	if got := cleanText([]byte("  a\x1b[1;33mb\x1b(B c\r\n\td\x07 ")); string(got) != "ab c d" {
		t.Fatalf("cleaned %q", got)
	}
}

// TestLangIDRefusesMissingPackage names the list it looked for and the
// package to install.
func TestLangIDRefusesMissingPackage(t *testing.T) {
	dir := t.TempDir()
	_, _, _, err := LoadLangID(LangIDOptions{DpkgInfo: dir, Languages: []Language{{"xx", "fortunes-xx"}}})
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), filepath.Join(dir, "fortunes-xx.list")) || !strings.Contains(err.Error(), "apt-get install fortunes-xx") {
		t.Fatalf("error %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fortunes-xx.list"), []byte("/nowhere/games/fortunes/xx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = LoadLangID(LangIDOptions{DpkgInfo: dir, Languages: []Language{{"xx", "fortunes-xx"}}})
	if err == nil || !strings.Contains(err.Error(), "/nowhere/games/fortunes/xx") {
		t.Fatalf("a listed file that is gone: %v", err)
	}
}

// TestLangIDFromDebian builds the set from the installed packages (make
// installs them): every language present on both sides, none a tenth of
// the largest's cookies without being reported.
func TestLangIDFromDebian(t *testing.T) {
	train, test, counts, err := LoadLangID(LangIDOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != len(LangIDLanguages) || train.Classes != len(LangIDLanguages) {
		t.Fatalf("%d languages counted", len(counts))
	}
	for i, c := range counts {
		t.Logf("%s (%s): %d files, cookies %d / %d, samples %d / %d", c.Class, LangIDLanguages[i].Package, c.Files, c.TrainDocs, c.TestDocs, c.Train, c.Test)
		if c.Train < 1000 || c.Test < 100 {
			t.Errorf("%s: %d training and %d test samples", c.Class, c.Train, c.Test)
		}
	}
	if share := float64(test.Len()) / float64(train.Len()+test.Len()); share < 0.07 || share > 0.13 {
		t.Errorf("test share %.3f", share)
	}
}
