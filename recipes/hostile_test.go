package recipes

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValuesThatDoNotEvaluate: a default or -var that cannot be evaluated
// is an error naming its position, never a panic; sizes and garbage are
// refused before they are parsed.
func TestValuesThatDoNotEvaluate(t *testing.T) {
	job := "job \"x\" {\n  model {\n    arch = \"lenet300\"\n  }\n  optimizer \"sgd\" {\n    lr = var.a\n  }\n}\n"
	for _, tc := range []struct {
		name, src string
		vars      []string
		want      string
	}{
		{"zero by zero", "variable \"a\" {\n  default = 0/0\n}\n" + job, nil, "r.hcl:2,13"},
		{"one by zero", "variable \"a\" {\n  default = 1/0\n}\n" + job, nil, "r.hcl:2,13"},
		{"defaults referring to each other", "variable \"a\" {\n  default = var.b\n}\nvariable \"b\" {\n  default = var.a\n}\n" + job, nil, "cannot refer to var.b"},
		{"a name for a number", "variable \"a\" {\n  default = 0.1\n}\n" + job, []string{"a=abc"}, `a takes a number like its default; "abc" is not one`},
		{"a number beyond float64", "variable \"a\" {\n  default = 0.1\n}\n" + job, []string{"a=1e400"}, `"1e400" is 1e+400, outside the range`},
		{"a literal beyond float64", strings.Replace(job, "var.a", "1e400", 1), nil, "optimizer.lr = 1e+400 is outside the range of a 64-bit number"},
		{"binary", "job \"x\" {\x00\x01}", nil, "not a text file"},
		{"too large", strings.Repeat("#", MaxBytes+1), nil, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "r.hcl", tc.vars)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("a %d-character error: %s", len(err.Error()), err)
			}
		})
	}
}

// TestGarbageRecipeIsRefusedBriefly: megabytes of garbage give a short
// error, not one line per byte.
func TestGarbageRecipeIsRefusedBriefly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.hcl")
	b := bytes.Repeat([]byte("}{ = = \"\n"), MaxBytes/9)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, nil)
	if err == nil || strings.Count(err.Error(), "\n") > maxErrors+1 {
		t.Fatalf("%d lines: %.500v", strings.Count(err.Error(), "\n"), err)
	}
}

// FuzzParse: no input makes the recipe loader panic; what loads writes a
// resolved recipe that loads again.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("*.hcl")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("variable \"a\" {\n  default = 0/0\n}\njob \"x\" {\n  epochs = var.a\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		j, err := Parse(src, "fuzz.hcl", nil)
		if err != nil {
			return
		}
		if _, err := Parse(j.HCL(), "resolved.hcl", nil); err != nil {
			t.Fatalf("the resolved recipe does not load: %v\n%s", err, j.HCL())
		}
	})
}
