package host_test

import (
	"runtime/debug"
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/compute/enginetest"
	"github.com/lathe-ml/lathe/compute/host"
)

func TestDeviceSuite(t *testing.T) {
	eng := cpu.New(cpu.Options{Threads: 2})
	dev, ref := host.New(eng), host.New(eng)
	defer dev.Close()
	defer ref.Close()
	enginetest.RunDevice(t, enginetest.DeviceHarness{Dev: dev, Ref: ref, Exact: true})
}

func TestStrictDeviceSuite(t *testing.T) {
	debug.SetPanicOnFault(true)
	eng := cpu.New(cpu.Options{Threads: 2})
	dev, ref := host.NewStrict(eng), host.New(eng)
	defer dev.Close()
	defer ref.Close()
	enginetest.RunDevice(t, enginetest.DeviceHarness{Dev: dev, Ref: ref, Exact: true})
}

// TestStrictFaultsOnHostAccess shows the strict device is strict: host code
// that reaches into a buffer's memory (here through the package's own
// slice, the way a gorgonia op reading Data() would) faults.
func TestStrictFaultsOnHostAccess(t *testing.T) {
	dev := host.NewStrict(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	b, err := dev.Alloc(16)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Upload(b, []float32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 3)
	if err := dev.Download(got, b); err != nil || got[2] != 3 {
		t.Fatalf("download = %v, %v", got, err)
	}
	addr, msg := func() (addr uintptr, msg string) {
		old := debug.SetPanicOnFault(true)
		defer debug.SetPanicOnFault(old)
		defer func() {
			r := recover()
			if f, ok := r.(interface{ Addr() uintptr }); ok {
				addr = f.Addr()
			}
			if r != nil {
				msg = toString(r)
			}
		}()
		sink = host.Peek(b) // reads the buffer outside any kernel
		return 0, ""
	}()
	if addr == 0 || addr != host.Address(b) {
		t.Fatalf("reading strict device memory from the host did not fault at the buffer (fault address %#x, buffer %#x, recovered %q)",
			addr, host.Address(b), msg)
	}
	// The device still works after the fault.
	if err := dev.Download(got, b); err != nil || got[0] != 1 {
		t.Fatalf("download after the fault = %v, %v", got, err)
	}
}

var sink float32

func toString(r any) string {
	if e, ok := r.(error); ok {
		return e.Error()
	}
	if s, ok := r.(string); ok {
		return s
	}
	return "non-error panic"
}
