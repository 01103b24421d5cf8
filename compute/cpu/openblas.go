package cpu

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/cpu"
)

// CBLAS constants (cblas.h).
const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

// openBLAS holds the functions bound from the shared library.
type openBLAS struct {
	path     string
	coreType string
	config   string
	sgemm    func(order, transA, transB, m, n, k int32, alpha float32, a unsafe.Pointer, lda int32, b unsafe.Pointer, ldb int32, beta float32, c unsafe.Pointer, ldc int32)
	setNum   func(n int32)
}

var (
	blasOnce sync.Once
	blasLib  *openBLAS
	blasErr  error
)

// libraryCandidates lists where OpenBLAS is looked for, in order. LATHE_OPENBLAS
// names an explicit file.
func libraryCandidates() []string {
	var c []string
	if p := os.Getenv("LATHE_OPENBLAS"); p != "" {
		c = append(c, p)
	}
	return append(c,
		"libopenblas.so.0",
		"/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
		"/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
		"/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
		"libopenblas.so",
	)
}

// CoreTypeFor returns the OPENBLAS_CORETYPE lathe forces for the running CPU,
// or "" to let OpenBLAS detect it.
func CoreTypeFor() string {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL:
		return "SkylakeX"
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return "Haswell"
	}
	return ""
}

// loadOpenBLAS loads the library once per process.
func loadOpenBLAS() (*openBLAS, error) {
	blasOnce.Do(func() { blasLib, blasErr = doLoad() })
	return blasLib, blasErr
}

func doLoad() (*openBLAS, error) {
	if os.Getenv("LATHE_BLAS") == "gonum" {
		return nil, errors.New("LATHE_BLAS=gonum asks for the pure-Go BLAS")
	}
	core := os.Getenv("OPENBLAS_CORETYPE")
	if core == "" {
		if core = CoreTypeFor(); core != "" {
			// Read by OpenBLAS's constructor, so it must be set before dlopen.
			os.Setenv("OPENBLAS_CORETYPE", core)
		}
	}
	if os.Getenv("OPENBLAS_THREAD_TIMEOUT") == "" {
		// OpenBLAS's idle threads spin for 2^28 cycles by default, taking a
		// core from the Go kernels that run between GEMMs; 2^20 cycles still
		// covers back-to-back GEMMs (measured: BENCHMARKS.md).
		os.Setenv("OPENBLAS_THREAD_TIMEOUT", "20")
	}
	var errs []error
	for _, path := range libraryCandidates() {
		h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lib := &openBLAS{path: path, coreType: core}
		if err := bind(h, lib); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		return lib, nil
	}
	return nil, fmt.Errorf("cpu: OpenBLAS not found (install Debian's libopenblas0-pthread): %w", errors.Join(errs...))
}

func bind(h uintptr, lib *openBLAS) (err error) {
	defer func() {
		// purego.RegisterLibFunc panics when a symbol is missing.
		if r := recover(); r != nil {
			err = fmt.Errorf("bind: %v", r)
		}
	}()
	purego.RegisterLibFunc(&lib.sgemm, h, "cblas_sgemm")
	purego.RegisterLibFunc(&lib.setNum, h, "openblas_set_num_threads")
	var getConfig func() string
	purego.RegisterLibFunc(&getConfig, h, "openblas_get_config")
	var coreName func() string
	purego.RegisterLibFunc(&coreName, h, "openblas_get_corename")
	lib.config = strings.TrimSpace(getConfig())
	if lib.coreType == "" {
		lib.coreType = coreName()
	}
	return nil
}
