// Package cuda reaches NVIDIA GPUs through the CUDA driver library loaded
// at run time (github.com/ebitengine/purego; no cgo, no CUDA headers at
// build time), so one binary builds and tests everywhere and uses a GPU
// where there is one. Probe finds and describes devices; Open starts the
// training engine on one (driver API, cuBLAS, kernels compiled by NVRTC).
package cuda

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/ebitengine/purego"
)

// GPU describes one CUDA device as the driver reports it.
type GPU struct {
	Index   int    `json:"index"`
	Name    string `json:"name"`
	Memory  int64  `json:"memory_bytes"`
	Major   int    `json:"compute_major"` // compute capability, e.g. 9.0 for an H100
	Minor   int    `json:"compute_minor"`
	Driver  int    `json:"driver_version"` // CUDA version the driver supports, e.g. 13000
	Devices int    `json:"devices"`        // how many the driver sees
}

func (d *GPU) String() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %.1f GiB, driver CUDA %d.%d)", d.Index, d.Name, d.Major, d.Minor,
		float64(d.Memory)/(1<<30), d.Driver/1000, d.Driver%1000/10)
}

// ErrNoCUDA wraps every reason a CUDA device cannot be used.
var ErrNoCUDA = errors.New("CUDA is not usable here")

// Library is the driver library's name; LibraryPaths are tried in order.
var LibraryPaths = []string{"libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1"}

var driver struct {
	once   sync.Once
	err    error
	path   string
	handle uintptr

	cuInit               func(flags uint32) int32
	cuDriverGetVersion   func(v *int32) int32
	cuDeviceGetCount     func(n *int32) int32
	cuDeviceGet          func(d *int32, ordinal int32) int32
	cuDeviceGetName      func(name *byte, n int32, d int32) int32
	cuDeviceTotalMem     func(bytes *uint64, d int32) int32
	cuDeviceGetAttribute func(v *int32, attr int32, d int32) int32
}

// Driver API results and attributes lathe names (cuda.h).
const (
	cudaSuccess              = 0
	cudaErrorNoDevice        = 100
	cudaErrorInvalidDevice   = 101
	cudaErrorInsufficientDrv = 35
	attrComputeMajor         = 75
	attrComputeMinor         = 76
)

func load() error {
	driver.once.Do(func() {
		var h uintptr
		var errs []string
		for _, p := range LibraryPaths {
			var err error
			if h, err = purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL); err == nil {
				driver.path, driver.handle = p, h
				break
			}
			errs = append(errs, err.Error())
		}
		if h == 0 {
			driver.err = fmt.Errorf("%w: the NVIDIA driver library libcuda.so.1 is not installed or not on the library path (%s)",
				ErrNoCUDA, strings.Join(errs, "; "))
			return
		}
		for _, f := range []struct {
			fn   any
			name string
		}{
			{&driver.cuInit, "cuInit"}, {&driver.cuDriverGetVersion, "cuDriverGetVersion"},
			{&driver.cuDeviceGetCount, "cuDeviceGetCount"}, {&driver.cuDeviceGet, "cuDeviceGet"},
			{&driver.cuDeviceGetName, "cuDeviceGetName"}, {&driver.cuDeviceTotalMem, "cuDeviceTotalMem_v2"},
			{&driver.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		} {
			// purego.RegisterLibFunc panics on a missing symbol: look first.
			if _, err := purego.Dlsym(h, f.name); err != nil {
				driver.err = fmt.Errorf("%w: %s lacks %s (a driver too old for CUDA 12)", ErrNoCUDA, driver.path, f.name)
				return
			}
			purego.RegisterLibFunc(f.fn, h, f.name)
		}
		if r := driver.cuInit(0); r != cudaSuccess {
			driver.err = fmt.Errorf("%w: cuInit failed: %s", ErrNoCUDA, result(r))
		}
	})
	return driver.err
}

func result(r int32) string {
	switch r {
	case cudaErrorNoDevice:
		return "no CUDA-capable device is present (CUDA_ERROR_NO_DEVICE)"
	case cudaErrorInvalidDevice:
		return "no such device (CUDA_ERROR_INVALID_DEVICE)"
	case cudaErrorInsufficientDrv:
		return "the driver is older than the CUDA runtime needs (CUDA_ERROR_INSUFFICIENT_DRIVER)"
	}
	return "CUDA error " + strconv.Itoa(int(r))
}

// Probe loads the driver and describes device index, or says in the
// error (which wraps ErrNoCUDA) what is missing.
func Probe(index int) (*GPU, error) {
	if err := load(); err != nil {
		return nil, err
	}
	d := &GPU{Index: index}
	var v, n int32
	if r := driver.cuDriverGetVersion(&v); r != cudaSuccess {
		return nil, fmt.Errorf("%w: cuDriverGetVersion: %s", ErrNoCUDA, result(r))
	}
	if r := driver.cuDeviceGetCount(&n); r != cudaSuccess {
		return nil, fmt.Errorf("%w: cuDeviceGetCount: %s", ErrNoCUDA, result(r))
	}
	d.Driver, d.Devices = int(v), int(n)
	if index < 0 || index >= int(n) {
		return nil, fmt.Errorf("%w: device cuda:%d requested, the driver sees %d", ErrNoCUDA, index, n)
	}
	var dev int32
	if r := driver.cuDeviceGet(&dev, int32(index)); r != cudaSuccess {
		return nil, fmt.Errorf("%w: cuDeviceGet(%d): %s", ErrNoCUDA, index, result(r))
	}
	name := make([]byte, 256)
	if r := driver.cuDeviceGetName(&name[0], int32(len(name)), dev); r != cudaSuccess {
		return nil, fmt.Errorf("%w: cuDeviceGetName: %s", ErrNoCUDA, result(r))
	}
	if i := strings.IndexByte(string(name), 0); i >= 0 {
		name = name[:i]
	}
	d.Name = string(name)
	var mem uint64
	if r := driver.cuDeviceTotalMem(&mem, dev); r != cudaSuccess {
		return nil, fmt.Errorf("%w: cuDeviceTotalMem: %s", ErrNoCUDA, result(r))
	}
	d.Memory = int64(mem)
	var major, minor int32
	driver.cuDeviceGetAttribute(&major, attrComputeMajor, dev)
	driver.cuDeviceGetAttribute(&minor, attrComputeMinor, dev)
	d.Major, d.Minor = int(major), int(minor)
	return d, nil
}

// ParseDevice reads a --device value: auto, cpu, cuda or cuda:N. It
// returns the kind ("auto", "cpu" or "cuda") and the CUDA device index.
func ParseDevice(s string) (kind string, index int, err error) {
	switch {
	case s == "auto" || s == "cpu" || s == "cuda":
		return s, 0, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("--device %q: cuda:N takes a device number", s)
		}
		return "cuda", n, nil
	}
	return "", 0, fmt.Errorf("--device %q: auto, cpu, cuda or cuda:N", s)
}
