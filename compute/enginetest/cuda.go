package enginetest

import (
	"os"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compute/cuda"
)

// CUDA opens the CUDA engine on device 0 for a test and closes it when
// the test ends. Where no GPU is usable the test is skipped — and fails
// instead when REQUIRE_GPU=1 is set, so a GPU run cannot pass by skipping.
func CUDA(t testing.TB) *cuda.Device {
	t.Helper()
	e, err := cuda.Open(0, cuda.Options{Logger: hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Info})})
	if err != nil {
		if os.Getenv("REQUIRE_GPU") == "1" {
			t.Fatalf("REQUIRE_GPU=1 but the CUDA engine did not start: %v", err)
		}
		t.Skipf("no CUDA engine here: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("closing the CUDA engine: %v", err)
		}
	})
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
