package host_test

import (
	"math/rand/v2"

	"github.com/lathe-ml/lathe/compute"
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

// TestCol2imIsIm2colsAdjoint: ⟨Im2col(x), c⟩ = ⟨x, Col2im(c)⟩ for strided
// and padded geometries (the backward pass of a convolution's patches).
func TestCol2imIsIm2colsAdjoint(t *testing.T) {
	dev := host.New(cpu.New(cpu.Options{Threads: 1}))
	defer dev.Close()
	r := rand.New(rand.NewPCG(3, 4))
	for _, g := range [][7]int{{2, 7, 7, 3, 3, 2, 1}, {1, 8, 6, 2, 3, 1, 1}, {2, 6, 6, 4, 1, 2, 0}, {1, 9, 9, 1, 5, 3, 2}} {
		rows, h, w, c, k, s, p := g[0], g[1], g[2], g[3], g[4], g[5], g[6]
		n, m := rows*h*w*c, rows*compute.ConvOut(h, k, s, p)*compute.ConvOut(w, k, s, p)*k*k*c
		x, cl := make([]float32, n), make([]float32, m)
		for i := range x {
			x[i] = float32(r.IntN(7) - 3) // small integers: every sum exact
		}
		for i := range cl {
			cl[i] = float32(r.IntN(7) - 3)
		}
		bx, _ := dev.Alloc(n)
		bc, _ := dev.Alloc(m)
		_ = dev.Upload(bx, x)
		dev.Im2col(bc, bx, rows, h, w, c, k, s, p)
		patches := make([]float32, m)
		_ = dev.Download(patches, bc)
		_ = dev.Upload(bc, cl)
		dev.Col2im(bx, bc, rows, h, w, c, k, s, p)
		back := make([]float32, n)
		_ = dev.Download(back, bx)
		var lhs, rhs float64
		for i := range patches {
			lhs += float64(patches[i]) * float64(cl[i])
		}
		for i := range x {
			rhs += float64(x[i]) * float64(back[i])
		}
		if lhs != rhs || lhs == 0 {
			t.Errorf("geometry %v: ⟨im2col x, c⟩ = %v, ⟨x, col2im c⟩ = %v", g, lhs, rhs)
		}
	}
}
