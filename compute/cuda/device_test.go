package cuda_test

import (
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
	"github.com/lathe-ml/lathe/compute/host"
)

// TestDeviceSuite runs the device suite on the GPU against the host
// reference (skipped without a GPU, failed with REQUIRE_GPU=1).
func TestDeviceSuite(t *testing.T) {
	e := enginetest.CUDA(t)
	t.Logf("device %s", e.Name())
	ref := host.New(cpu.New(cpu.Options{}))
	defer ref.Close()
	enginetest.RunDevice(t, enginetest.DeviceHarness{Dev: e, Ref: ref})
}
