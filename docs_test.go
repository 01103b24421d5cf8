package lathe

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/run"
)

var link = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// slug is the anchor a Markdown heading gets (GitHub's rule).
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	inCode := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
		}
		if !inCode && strings.HasPrefix(l, "#") {
			out[slug(strings.TrimLeft(l, "#"))] = true
		}
	}
	return out
}

// TestDocsLinksResolve checks every relative link of the README and the
// guides: the file exists inside the repository, and so does the heading
// an anchor names. The README links nowhere outside the repository.
func TestDocsLinksResolve(t *testing.T) {
	root, _ := filepath.Abs(".")
	docs, _ := filepath.Glob("docs/*.md")
	for _, file := range append([]string{"README.md", "BENCHMARKS.md"}, docs...) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
				if file == "README.md" {
					t.Errorf("README.md links outside the repository: %s", target)
				}
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			full := file
			if path != "" {
				full = filepath.Join(filepath.Dir(file), path)
			}
			abs, _ := filepath.Abs(full)
			if !strings.HasPrefix(abs, root+string(filepath.Separator)) {
				t.Errorf("%s: %s points outside the repository", file, target)
				continue
			}
			if _, err := os.Stat(full); err != nil {
				t.Errorf("%s: %s does not exist", file, target)
				continue
			}
			if anchor != "" && strings.HasSuffix(full, ".md") && !anchors(t, full)[anchor] {
				t.Errorf("%s: %s has no heading #%s", file, path, anchor)
			}
		}
	}
}

// TestREADMEIsAFrontDoor keeps the README short, and its recipe a real one.
func TestREADMEIsAFrontDoor(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > 150 {
		t.Fatalf("README.md has %d lines; keep it under 150 and move the rest to docs/", n)
	}
	_, rest, ok := strings.Cut(string(b), "```hcl\n")
	src, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md shows no recipe")
	}
	job, err := recipes.Parse([]byte(src), "README.md", nil)
	if err == nil {
		err = run.Check(job)
	}
	if err != nil {
		t.Fatalf("the README's recipe: %v", err)
	}
}
