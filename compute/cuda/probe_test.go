package cuda

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestProbe describes device 0 where a GPU is usable; elsewhere the error
// names CUDA and what is missing. With REQUIRE_GPU=1 a missing GPU fails.
func TestProbe(t *testing.T) {
	d, err := Probe(0)
	if err != nil {
		if !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "CUDA") {
			t.Fatalf("an error that does not say CUDA is missing: %v", err)
		}
		if os.Getenv("REQUIRE_GPU") == "1" {
			t.Fatalf("REQUIRE_GPU=1: %v", err)
		}
		t.Skipf("no GPU here: %v", err)
	}
	if d.Name == "" || d.Memory <= 0 || d.Major < 5 || d.Driver < 12000 || d.Devices < 1 {
		t.Fatalf("implausible device: %+v", d)
	}
	t.Logf("%s", d)
	if _, err := Probe(d.Devices); err == nil || !strings.Contains(err.Error(), "requested") {
		t.Fatalf("a device past the last: %v", err)
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]string{"auto": "auto/0", "cpu": "cpu/0", "cuda": "cuda/0", "cuda:3": "cuda/3"} {
		k, i, err := ParseDevice(in)
		if err != nil || k+"/"+string(rune('0'+i)) != want {
			t.Errorf("%s: %s %d %v", in, k, i, err)
		}
	}
	for _, bad := range []string{"gpu", "cuda:", "cuda:-1", "cuda:x", ""} {
		if _, _, err := ParseDevice(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
