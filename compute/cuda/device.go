package cuda

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/compute"
)

//go:embed kernels.cu
var kernelSource string

// kernelNames are the kernels.cu entry points Open loads.
var kernelNames = []string{"bias_act", "relu_grad", "col_sum", "col_sum_part", "gather_rows", "softmax_kd", "row_abs_max",
	"fake_quant", "sgd", "fill", "gather_shifted", "dropout_mask", "mul",
	"im2col", "col2im", "maxpool", "maxpool_grad", "avgpool", "avgpool_grad", "bn_stats_part", "bn_stats", "bn_scale", "bn_forward", "scale_rows", "div_cols", "act_minmax", "act_observe", "act_quant", "relu6", "relu6_grad", "depthwise", "depthwise_grad_x", "depthwise_grad_w_part",
	"bn_grad_part", "bn_grad_sums", "bn_grad_dx", "add_act", "copy_f", "gap", "gap_grad"}

// LibraryPathEnv names an environment variable holding extra directories
// (colon-separated) to look for cuBLAS and NVRTC in, before the standard
// ones.
const LibraryPathEnv = "LATHE_CUDA_LIBRARY_PATH"

var api struct {
	once sync.Once
	err  error

	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuCtxSynchronize          func() int32
	cuMemAlloc                func(p *uint64, bytes uint64) int32
	cuMemFree                 func(p uint64) int32
	cuMemcpyHtoD              func(dst uint64, src unsafe.Pointer, n uint64) int32
	cuMemcpyDtoH              func(dst unsafe.Pointer, src uint64, n uint64) int32
	cuMemsetD32               func(dst uint64, v uint32, n uint64) int32
	cuModuleLoadData          func(mod *uintptr, image unsafe.Pointer) int32
	cuModuleGetFunction       func(fn *uintptr, mod uintptr, name string) int32
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shmem uint32, stream uintptr, params, extra unsafe.Pointer) int32
	cuGetErrorName            func(r int32, s **byte) int32

	cublasPath    string
	cublasCreate  func(h *uintptr) int32
	cublasDestroy func(h uintptr) int32
	cublasSgemm   func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32

	nvrtcPath            string
	nvrtcVersion         func(major, minor *int32) int32
	nvrtcCreateProgram   func(p *uintptr, src, name string, nh int32, headers, includes unsafe.Pointer) int32
	nvrtcCompileProgram  func(p uintptr, nopt int32, opts unsafe.Pointer) int32
	nvrtcGetCUBINSize    func(p uintptr, n *uint64) int32
	nvrtcGetCUBIN        func(p uintptr, buf unsafe.Pointer) int32
	nvrtcGetProgramLogSz func(p uintptr, n *uint64) int32
	nvrtcGetProgramLog   func(p uintptr, buf unsafe.Pointer) int32
	nvrtcDestroyProgram  func(p *uintptr) int32
}

type sym struct {
	fn   any
	name string
}

func bind(h uintptr, lib string, syms []sym) error {
	for _, s := range syms {
		if _, err := purego.Dlsym(h, s.name); err != nil {
			return fmt.Errorf("%w: %s lacks %s", ErrNoCUDA, lib, s.name)
		}
		purego.RegisterLibFunc(s.fn, h, s.name)
	}
	return nil
}

// openLib dlopens the first of names found in the directories of
// LATHE_CUDA_LIBRARY_PATH, the loader's path, and the CUDA toolkit's.
func openLib(what string, names ...string) (uintptr, string, error) {
	var dirs []string
	if v := os.Getenv(LibraryPathEnv); v != "" {
		dirs = append(dirs, filepath.SplitList(v)...)
	}
	dirs = append(dirs, "", "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib")
	var errs []string
	for _, d := range dirs {
		for _, n := range names {
			p := n
			if d != "" {
				p = filepath.Join(d, n)
			}
			h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err == nil {
				return h, p, nil
			}
			if d == "" {
				errs = append(errs, err.Error())
			}
		}
	}
	return 0, "", fmt.Errorf("%w: %s (%s) not found — install the CUDA toolkit's libraries or name their directory in %s (%s)",
		ErrNoCUDA, what, strings.Join(names, " or "), LibraryPathEnv, strings.Join(errs, "; "))
}

func loadAPI() error {
	if err := load(); err != nil {
		return err
	}
	api.once.Do(func() {
		h := driver.handle
		if api.err = bind(h, driver.path, []sym{
			{&api.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"}, {&api.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
			{&api.cuCtxSetCurrent, "cuCtxSetCurrent"},
			{&api.cuCtxSynchronize, "cuCtxSynchronize"}, {&api.cuMemAlloc, "cuMemAlloc_v2"}, {&api.cuMemFree, "cuMemFree_v2"},
			{&api.cuMemcpyHtoD, "cuMemcpyHtoD_v2"}, {&api.cuMemcpyDtoH, "cuMemcpyDtoH_v2"}, {&api.cuMemsetD32, "cuMemsetD32_v2"},
			{&api.cuModuleLoadData, "cuModuleLoadData"}, {&api.cuModuleGetFunction, "cuModuleGetFunction"},
			{&api.cuLaunchKernel, "cuLaunchKernel"}, {&api.cuGetErrorName, "cuGetErrorName"},
		}); api.err != nil {
			return
		}
		bh, bp, err := openLib("cuBLAS", "libcublas.so.13", "libcublas.so.12")
		if err != nil {
			api.err = err
			return
		}
		api.cublasPath = bp
		if api.err = bind(bh, bp, []sym{{&api.cublasCreate, "cublasCreate_v2"}, {&api.cublasDestroy, "cublasDestroy_v2"}, {&api.cublasSgemm, "cublasSgemm_v2"}}); api.err != nil {
			return
		}
		nh, np, err := openLib("NVRTC", "libnvrtc.so.13", "libnvrtc.so.12")
		if err != nil {
			api.err = err
			return
		}
		api.nvrtcPath = np
		api.err = bind(nh, np, []sym{
			{&api.nvrtcVersion, "nvrtcVersion"}, {&api.nvrtcCreateProgram, "nvrtcCreateProgram"},
			{&api.nvrtcCompileProgram, "nvrtcCompileProgram"}, {&api.nvrtcGetCUBINSize, "nvrtcGetCUBINSize"},
			{&api.nvrtcGetCUBIN, "nvrtcGetCUBIN"}, {&api.nvrtcGetProgramLogSz, "nvrtcGetProgramLogSize"},
			{&api.nvrtcGetProgramLog, "nvrtcGetProgramLog"}, {&api.nvrtcDestroyProgram, "nvrtcDestroyProgram"},
		})
	})
	return api.err
}

// cstr reads a NUL-terminated C string.
func cstr(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for q := unsafe.Pointer(p); *(*byte)(q) != 0; q = unsafe.Add(q, 1) {
		b = append(b, *(*byte)(q))
	}
	return string(b)
}

func errName(r int32) string {
	var p *byte
	if api.cuGetErrorName != nil && api.cuGetErrorName(r, &p) == 0 && p != nil {
		return fmt.Sprintf("%s (%d)", cstr(p), r)
	}
	return result(r)
}

// Device is a compute.Device on one CUDA GPU: buffers in device memory
// (from a caching allocator), GEMM through cuBLAS, the other kernels from
// kernels.cu compiled by NVRTC to CUBIN for the GPU's architecture (and
// cached on disk by hash). All work goes to the legacy default stream, in
// order; the host waits only in Download and Sync.
//
// Every call makes the device's primary context current on the calling OS
// thread (the goroutine stays locked to it for the call), so a Device may
// be used from any goroutine, one at a time.
type Device struct {
	info   GPU
	dev    int32
	ctx    uintptr
	blas   uintptr
	fns    map[string]uintptr
	pool   map[uint64][]uint64 // free device blocks by size in bytes
	live   map[*dbuf]struct{}
	err    error
	closed bool

	// launch is the argument block of cuLaunchKernel, pinned for the
	// engine's life: vals holds the values, ptrs points at each.
	launch  *launchArgs
	pin     runtime.Pinner
	alpha   *[2]float32
	scratch *dbuf // ColSum's block sums
}

type launchArgs struct {
	vals [12]uint64
	ptrs [12]unsafe.Pointer
}

type dbuf struct {
	p     uint64
	n     int
	bytes uint64
}

func (b *dbuf) Len() int { return b.n }

var (
	_ compute.Device    = (*Device)(nil)
	_ compute.Describer = (*Device)(nil)
)

// Options configure Open.
type Options struct {
	// CacheDir holds compiled kernels; "" means the user cache directory's
	// lathe/cuda, and "-" disables the cache.
	CacheDir string
	Logger   hclog.Logger
}

// Open starts the engine on device index: it loads the driver, cuBLAS and
// NVRTC, retains the device's primary context and compiles (or finds in
// the cache) the kernels. The error wraps ErrNoCUDA when CUDA is not
// usable and says what is missing.
func Open(index int, opts Options) (*Device, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	info, err := Probe(index)
	if err != nil {
		return nil, err
	}
	if err := loadAPI(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	e := &Device{info: *info, fns: map[string]uintptr{}, pool: map[uint64][]uint64{}, live: map[*dbuf]struct{}{},
		launch: &launchArgs{}, alpha: &[2]float32{}}
	if r := driver.cuDeviceGet(&e.dev, int32(index)); r != 0 {
		return nil, fmt.Errorf("%w: cuDeviceGet: %s", ErrNoCUDA, errName(r))
	}
	if r := api.cuDevicePrimaryCtxRetain(&e.ctx, e.dev); r != 0 {
		return nil, fmt.Errorf("%w: cuDevicePrimaryCtxRetain: %s", ErrNoCUDA, errName(r))
	}
	if r := api.cuCtxSetCurrent(e.ctx); r != 0 {
		return nil, fmt.Errorf("%w: cuCtxSetCurrent: %s", ErrNoCUDA, errName(r))
	}
	if r := api.cublasCreate(&e.blas); r != 0 {
		return nil, fmt.Errorf("%w: cublasCreate (%s): status %d", ErrNoCUDA, api.cublasPath, r)
	}
	cubin, err := e.kernels(opts.CacheDir, log)
	if err != nil {
		return nil, err
	}
	var mod uintptr
	if r := api.cuModuleLoadData(&mod, unsafe.Pointer(&cubin[0])); r != 0 {
		return nil, fmt.Errorf("cuda: load the compiled kernels: %s", errName(r))
	}
	for _, n := range kernelNames {
		var f uintptr
		if r := api.cuModuleGetFunction(&f, mod, n); r != 0 {
			return nil, fmt.Errorf("cuda: kernel %s: %s", n, errName(r))
		}
		e.fns[n] = f
	}
	e.pin.Pin(e.launch)
	e.pin.Pin(e.alpha)
	for i := range e.launch.ptrs {
		e.launch.ptrs[i] = unsafe.Pointer(&e.launch.vals[i])
	}
	log.Info("cuda engine ready", "device", e.info.String(), "cublas", api.cublasPath, "nvrtc", api.nvrtcPath)
	return e, nil
}

// Info describes the engine's device.
func (e *Device) Info() GPU { return e.info }

// Describe implements compute.Describer, for run manifests.
func (e *Device) Describe() compute.Info {
	return compute.Info{Engine: e.info.String(), BLAS: "cuBLAS " + api.cublasPath + ", NVRTC " + api.nvrtcPath}
}

// kernels returns kernels.cu compiled to CUBIN for this GPU.
func (e *Device) kernels(cacheDir string, log hclog.Logger) ([]byte, error) {
	var maj, mnr int32
	api.nvrtcVersion(&maj, &mnr)
	arch := fmt.Sprintf("sm_%d%d", e.info.Major, e.info.Minor)
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00nvrtc %d.%d", kernelSource, arch, maj, mnr)))
	key := hex.EncodeToString(sum[:12]) + "-" + arch + ".cubin"
	if cacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			cacheDir = filepath.Join(d, "lathe", "cuda")
		}
	}
	if cacheDir != "" && cacheDir != "-" {
		if b, err := os.ReadFile(filepath.Join(cacheDir, key)); err == nil && len(b) > 0 {
			return b, nil
		}
	}
	var prog uintptr
	if r := api.nvrtcCreateProgram(&prog, kernelSource, "lathe_kernels.cu", 0, nil, nil); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcCreateProgram: status %d", r)
	}
	defer api.nvrtcDestroyProgram(&prog)
	opts := []string{"--gpu-architecture=" + arch, "--std=c++17", "--fmad=false"}
	cs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts))
	for i, o := range opts {
		cs[i] = append([]byte(o), 0)
		ptrs[i] = &cs[i][0]
	}
	r := api.nvrtcCompileProgram(prog, int32(len(opts)), unsafe.Pointer(&ptrs[0]))
	runtime.KeepAlive(cs)
	runtime.KeepAlive(ptrs)
	if r != 0 {
		var n uint64
		api.nvrtcGetProgramLogSz(prog, &n)
		msg := make([]byte, n+1)
		api.nvrtcGetProgramLog(prog, unsafe.Pointer(&msg[0]))
		return nil, fmt.Errorf("cuda: NVRTC %d.%d could not compile the kernels for %s (status %d): %s", maj, mnr, arch, r,
			strings.TrimRight(string(msg), "\x00\n"))
	}
	var n uint64
	if r := api.nvrtcGetCUBINSize(prog, &n); r != 0 || n == 0 {
		return nil, fmt.Errorf("cuda: nvrtcGetCUBINSize: status %d", r)
	}
	cubin := make([]byte, n)
	if r := api.nvrtcGetCUBIN(prog, unsafe.Pointer(&cubin[0])); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcGetCUBIN: status %d", r)
	}
	log.Info("compiled cuda kernels", "arch", arch, "nvrtc", fmt.Sprintf("%d.%d", maj, mnr), "bytes", n)
	if cacheDir != "" && cacheDir != "-" {
		if err := os.MkdirAll(cacheDir, 0o755); err == nil {
			tmp := filepath.Join(cacheDir, key+".tmp")
			if os.WriteFile(tmp, cubin, 0o644) == nil {
				_ = os.Rename(tmp, filepath.Join(cacheDir, key))
			}
		}
	}
	return cubin, nil
}

// enter makes the context current on this thread for one call.
func (e *Device) enter() func() {
	runtime.LockOSThread()
	if r := api.cuCtxSetCurrent(e.ctx); r != 0 {
		e.fail("cuCtxSetCurrent", r)
	}
	return runtime.UnlockOSThread
}

func (e *Device) fail(what string, r int32) {
	if e.err == nil {
		e.err = fmt.Errorf("cuda: %s: %s", what, errName(r))
	}
}

// Name implements compute.Device.
func (e *Device) Name() string { return e.info.String() }

// Alloc implements compute.Device.
func (e *Device) Alloc(n int) (compute.Buffer, error) {
	if e.closed {
		return nil, errors.New("cuda: engine closed")
	}
	if e.err != nil {
		return nil, e.err
	}
	if n < 0 {
		return nil, fmt.Errorf("cuda: alloc of %d elements", n)
	}
	defer e.enter()()
	bytes := uint64(max(n, 1)) * 4
	bytes = (bytes + 255) &^ 255
	b := &dbuf{n: n, bytes: bytes}
	if free := e.pool[bytes]; len(free) > 0 {
		b.p = free[len(free)-1]
		e.pool[bytes] = free[:len(free)-1]
	} else if r := api.cuMemAlloc(&b.p, bytes); r != 0 {
		return nil, fmt.Errorf("cuda: allocate %d bytes on %s: %s", bytes, e.info.Name, errName(r))
	}
	if r := api.cuMemsetD32(b.p, 0, bytes/4); r != 0 {
		e.fail("cuMemsetD32", r)
	}
	e.live[b] = struct{}{}
	return b, e.err
}

// Free implements compute.Device: the block goes back to the pool.
func (e *Device) Free(cb compute.Buffer) {
	b := e.buf(cb)
	delete(e.live, b)
	e.pool[b.bytes] = append(e.pool[b.bytes], b.p)
	b.p = 0
}

// Close implements compute.Device: it frees every block, pooled or live.
func (e *Device) Close() error {
	if e.closed {
		return nil
	}
	defer e.enter()()
	api.cuCtxSynchronize()
	for b := range e.live {
		e.Free(b)
	}
	for _, ps := range e.pool {
		for _, p := range ps {
			api.cuMemFree(p)
		}
	}
	e.pool = nil
	api.cublasDestroy(e.blas)
	api.cuDevicePrimaryCtxRelease(e.dev)
	e.pin.Unpin()
	e.closed = true
	return e.err
}

func (e *Device) buf(b compute.Buffer) *dbuf {
	d, ok := b.(*dbuf)
	if !ok {
		panic(fmt.Sprintf("cuda: buffer of another device (%T)", b))
	}
	if _, ok := e.live[d]; !ok {
		panic("cuda: buffer freed or of another engine")
	}
	return d
}

func (e *Device) ptr(b compute.Buffer, need int, what string) uint64 {
	if b == nil {
		return 0
	}
	d := e.buf(b)
	if d.n < need {
		panic(fmt.Sprintf("cuda: %s: %d elements, need %d", what, d.n, need))
	}
	return d.p
}

// Upload implements compute.Device.
func (e *Device) Upload(dst compute.Buffer, src []float32) error {
	if n := e.buf(dst).n; len(src) > n {
		return fmt.Errorf("cuda: upload of %d elements with a buffer of %d", len(src), n)
	}
	p := e.buf(dst).p
	if len(src) == 0 {
		return e.err
	}
	defer e.enter()()
	if r := api.cuMemcpyHtoD(p, unsafe.Pointer(&src[0]), uint64(4*len(src))); r != 0 {
		e.fail("cuMemcpyHtoD", r)
	}
	return e.err
}

// UploadInt32 implements compute.Device: the same bytes as float32s.
func (e *Device) UploadInt32(dst compute.Buffer, src []int32) error {
	return e.Upload(dst, unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(src))), len(src)))
}

// Download implements compute.Device.
func (e *Device) Download(dst []float32, src compute.Buffer) error {
	if n := e.buf(src).n; len(dst) > n {
		return fmt.Errorf("cuda: download of %d elements with a buffer of %d", len(dst), n)
	}
	p := e.buf(src).p
	if len(dst) == 0 {
		return e.Sync()
	}
	defer e.enter()()
	if r := api.cuMemcpyDtoH(unsafe.Pointer(&dst[0]), p, uint64(4*len(dst))); r != 0 {
		e.fail("cuMemcpyDtoH", r)
	}
	return e.err
}

// Sync implements compute.Device.
func (e *Device) Sync() error {
	defer e.enter()()
	if r := api.cuCtxSynchronize(); r != 0 {
		e.fail("cuCtxSynchronize", r)
	}
	return e.err
}

// Gemm implements compute.Device through cublasSgemm: a row-major product
// is the column-major product of the transposes, C' = op(B)'·op(A)'.
func (e *Device) Gemm(transA, transB bool, m, n, k int, alpha float32, a, b compute.Buffer, beta float32, c compute.Buffer) {
	pa := e.ptr(a, m*k, "gemm a")
	pb := e.ptr(b, k*n, "gemm b")
	pc := e.ptr(c, m*n, "gemm c")
	if m == 0 || n == 0 {
		return
	}
	lda, ldb := k, n
	opA, opB := int32(0), int32(0)
	if transA {
		lda, opA = m, 1
	}
	if transB {
		ldb, opB = k, 1
	}
	defer e.enter()()
	e.alpha[0], e.alpha[1] = alpha, beta
	if r := api.cublasSgemm(e.blas, opB, opA, int32(n), int32(m), int32(k), &e.alpha[0], pb, int32(ldb), pa, int32(lda),
		&e.alpha[1], pc, int32(n)); r != 0 && e.err == nil {
		e.err = fmt.Errorf("cuda: cublasSgemm %dx%dx%d: status %d", m, n, k, r)
	}
}

// run launches kernel name over grid blocks of block threads with args
// (uint64 device pointers, int32 and float32 values).
func (e *Device) run(name string, grid, block int, args ...any) {
	e.run2d(name, grid, 1, block, args...)
}

// run2d is run over a grid of gx×gy blocks.
func (e *Device) run2d(name string, gx, gy, block int, args ...any) {
	if gx == 0 || gy == 0 {
		return
	}
	l := e.launch
	for i, a := range args {
		switch v := a.(type) {
		case int:
			l.vals[i] = uint64(uint32(int32(v)))
		case float32:
			l.vals[i] = uint64(math.Float32bits(v))
		case float64:
			l.vals[i] = math.Float64bits(v)
		case uint64:
			l.vals[i] = v
		default:
			panic(fmt.Sprintf("cuda: kernel %s: argument %d of type %T", name, i, a))
		}
	}
	defer e.enter()()
	if r := api.cuLaunchKernel(e.fns[name], uint32(gx), uint32(gy), 1, uint32(block), 1, 1, 0, 0,
		unsafe.Pointer(&l.ptrs[0]), nil); r != 0 {
		e.fail("launch "+name, r)
	}
}

const block = 256

func blocks(n int) int { return (n + block - 1) / block }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BiasAct implements compute.Device.
func (e *Device) BiasAct(y, bias compute.Buffer, rows, cols int, relu bool) {
	e.run("bias_act", blocks(rows*cols), block, e.ptr(y, rows*cols, "bias_act y"), e.ptr(bias, cols, "bias_act bias"), rows, cols, b2i(relu))
}

// ReLUGrad implements compute.Device.
func (e *Device) ReLUGrad(dx, dy, y compute.Buffer, n int) {
	e.run("relu_grad", blocks(n), block, e.ptr(dx, n, "relu_grad dx"), e.ptr(dy, n, "relu_grad dy"), e.ptr(y, n, "relu_grad y"), n)
}

// ColSum implements compute.Device: block sums into a scratch buffer the
// engine keeps, then their sum.
func (e *Device) ColSum(dst, x compute.Buffer, rows, cols int) {
	pd, px := e.ptr(dst, cols, "col_sum dst"), e.ptr(x, rows*cols, "col_sum x")
	nb := (rows + compute.ColSumBlock - 1) / compute.ColSumBlock
	if nb == 0 || cols == 0 {
		e.Fill(dst, cols, 0)
		return
	}
	part := e.scratchOf(nb * cols)
	if part == 0 {
		return
	}
	e.run2d("col_sum_part", blocks(cols), nb, block, part, px, rows, cols, compute.ColSumBlock)
	e.run("col_sum", blocks(cols), block, pd, part, nb, cols)
}

// scratchOf returns the engine's scratch buffer grown to at least n
// elements (0 after a failure, which is kept). Kernels that use it run
// in stream order, so one scratch serves them all.
func (e *Device) scratchOf(n int) uint64 {
	if e.scratch == nil || e.scratch.n < n {
		if e.scratch != nil {
			e.Free(e.scratch)
			e.scratch = nil
		}
		b, err := e.Alloc(n)
		if err != nil {
			if e.err == nil {
				e.err = err
			}
			return 0
		}
		e.scratch = b.(*dbuf)
	}
	return e.scratch.p
}

// GatherRows implements compute.Device. Indices are not checked on the
// device: they come from the host, which checks them before uploading.
func (e *Device) GatherRows(dst, src, idx compute.Buffer, off, rows, width int) {
	e.run("gather_rows", blocks(rows*width), block, e.ptr(dst, rows*width, "gather dst"), e.ptr(src, 0, "gather src"),
		e.ptr(idx, off+rows, "gather idx"), off, rows, width)
}

// GatherShifted implements compute.Device.
func (e *Device) GatherShifted(dst, src, idx, shifts compute.Buffer, off, rows, h, w int) {
	e.run("gather_shifted", blocks(rows*h*w), block, e.ptr(dst, rows*h*w, "gather_shifted dst"), e.ptr(src, 0, "gather_shifted src"),
		e.ptr(idx, off+rows, "gather_shifted idx"), e.ptr(shifts, 0, "gather_shifted shifts"), off, rows, h, w)
}

// DropoutMask implements compute.Device.
func (e *Device) DropoutMask(mask compute.Buffer, n int, p, scale float32, seed uint64) {
	e.run("dropout_mask", blocks(n), block, e.ptr(mask, n, "dropout_mask"), n, p, scale, seed)
}

// Mul implements compute.Device.
func (e *Device) Mul(x, y compute.Buffer, n int) {
	e.run("mul", blocks(n), block, e.ptr(x, n, "mul x"), e.ptr(y, n, "mul y"), n)
}

// Im2col implements compute.Device.
func (e *Device) Im2col(col, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n := rows * compute.ConvOut(h, k, stride, pad) * compute.ConvOut(w, k, stride, pad) * k * k * c
	e.run("im2col", blocks(n), block, e.ptr(col, n, "im2col col"), e.ptr(x, rows*h*w*c, "im2col x"), rows, h, w, c, k, stride, pad)
}

// Col2im implements compute.Device.
func (e *Device) Col2im(dx, dcol compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n := rows * h * w * c
	nc := rows * compute.ConvOut(h, k, stride, pad) * compute.ConvOut(w, k, stride, pad) * k * k * c
	e.run("col2im", blocks(n), block, e.ptr(dx, n, "col2im dx"), e.ptr(dcol, nc, "col2im dcol"), rows, h, w, c, k, stride, pad)
}

// colBlock is the block size of a kernel with one thread per column.
func colBlock(cols int) int { return min(block, (cols+31)/32*32) }

// BNStats implements compute.Device: float64 block sums into the scratch
// (two per column and block), then their sums in order.
func (e *Device) BNStats(mean, inv, rmean, rvar, x compute.Buffer, rows, cols int, momentum, eps float64) {
	pm, pi, px := e.ptr(mean, cols, "bn_stats mean"), e.ptr(inv, cols, "bn_stats inv"), e.ptr(x, rows*cols, "bn_stats x")
	prm, prv := e.ptr(rmean, cols, "bn_stats running mean"), e.ptr(rvar, cols, "bn_stats running var")
	nb := (rows + compute.ColSumBlock - 1) / compute.ColSumBlock
	if nb == 0 || cols == 0 {
		return
	}
	part := e.scratchOf(4 * nb * cols)
	if part == 0 {
		return
	}
	cb := colBlock(cols)
	e.run2d("bn_stats_part", (cols+cb-1)/cb, nb, cb, part, px, rows, cols, compute.ColSumBlock)
	e.run("bn_stats", (cols+cb-1)/cb, cb, pm, pi, prm, prv, part, nb, rows, cols, momentum, eps)
}

// BNScale implements compute.Device.
func (e *Device) BNScale(s, gamma, vr compute.Buffer, cols int, eps float64) {
	e.run("bn_scale", blocks(cols), block, e.ptr(s, cols, "bn_scale s"), e.ptr(gamma, cols, "bn_scale gamma"), e.ptr(vr, cols, "bn_scale var"), cols, eps)
}

// ScaleRows implements compute.Device.
func (e *Device) ScaleRows(dst, x, s compute.Buffer, rows, cols int) {
	n := rows * cols
	e.run("scale_rows", blocks(n), block, e.ptr(dst, n, "scale_rows dst"), e.ptr(x, n, "scale_rows x"), e.ptr(s, rows, "scale_rows s"), rows, cols)
}

// DivCols implements compute.Device.
func (e *Device) DivCols(dst, x, s compute.Buffer, rows, cols int) {
	n := rows * cols
	e.run("div_cols", blocks(n), block, e.ptr(dst, n, "div_cols dst"), e.ptr(x, n, "div_cols x"), e.ptr(s, cols, "div_cols s"), rows, cols)
}

// ReLU6 implements compute.Device.
func (e *Device) ReLU6(y compute.Buffer, n int) {
	e.run("relu6", blocks(n), block, e.ptr(y, n, "relu6 y"), n)
}

// ReLU6Grad implements compute.Device.
func (e *Device) ReLU6Grad(dx, dy, y compute.Buffer, n int) {
	e.run("relu6_grad", blocks(n), block, e.ptr(dx, n, "relu6_grad dx"), e.ptr(dy, n, "relu6_grad dy"), e.ptr(y, n, "relu6_grad y"), n)
}

// DepthwiseConv implements compute.Device.
func (e *Device) DepthwiseConv(y, x, wt compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n := rows * compute.ConvOut(h, k, stride, pad) * compute.ConvOut(w, k, stride, pad) * c
	e.run("depthwise", blocks(n), block, e.ptr(y, n, "depthwise y"), e.ptr(x, rows*h*w*c, "depthwise x"), e.ptr(wt, c*k*k, "depthwise wt"),
		rows, h, w, c, k, stride, pad)
}

// DepthwiseConvGradX implements compute.Device.
func (e *Device) DepthwiseConvGradX(dx, dy, wt compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n, no := rows*h*w*c, rows*compute.ConvOut(h, k, stride, pad)*compute.ConvOut(w, k, stride, pad)*c
	e.run("depthwise_grad_x", blocks(n), block, e.ptr(dx, n, "depthwise_grad_x dx"), e.ptr(dy, no, "depthwise_grad_x dy"),
		e.ptr(wt, c*k*k, "depthwise_grad_x wt"), rows, h, w, c, k, stride, pad)
}

// DepthwiseConvGradW implements compute.Device: block sums into the
// scratch, then col_sum adds them in order.
func (e *Device) DepthwiseConvGradW(dwt, dy, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	taps, pos := c*k*k, rows*compute.ConvOut(h, k, stride, pad)*compute.ConvOut(w, k, stride, pad)
	pw, py, px := e.ptr(dwt, taps, "depthwise_grad_w dwt"), e.ptr(dy, pos*c, "depthwise_grad_w dy"), e.ptr(x, rows*h*w*c, "depthwise_grad_w x")
	nb := (pos + compute.ColSumBlock - 1) / compute.ColSumBlock
	if nb == 0 {
		e.Fill(dwt, taps, 0)
		return
	}
	part := e.scratchOf(nb * taps)
	if part == 0 {
		return
	}
	e.run2d("depthwise_grad_w_part", blocks(taps), nb, block, part, py, px, rows, h, w, c, k, stride, pad, compute.ColSumBlock)
	e.run("col_sum", blocks(taps), block, pw, part, nb, taps)
}

// actBlocks is how many blocks act_minmax takes min and max over.
const actBlocks = 128

// ActQuant implements compute.Device: block minima and maxima into the
// scratch, the observer's update and parameters in one thread, then the
// elementwise pass.
func (e *Device) ActQuant(y, inside, obs, x compute.Buffer, n, bits int, momentum float32, observe bool) {
	py, pin, po, px := e.ptr(y, n, "act_quant y"), e.ptr(inside, n, "act_quant inside"), e.ptr(obs, 5, "act_quant obs"), e.ptr(x, n, "act_quant x")
	qmin, qmax := 0, 1<<bits-1
	if observe && n > 0 {
		part := e.scratchOf(2 * actBlocks)
		if part == 0 {
			return
		}
		e.run("act_minmax", actBlocks, block, part, px, n)
		e.run("act_observe", 1, 1, po, part, actBlocks, 1, momentum, qmin, qmax)
	} else {
		e.run("act_observe", 1, 1, po, uint64(0), 0, 0, momentum, qmin, qmax)
	}
	e.run("act_quant", blocks(n), block, py, pin, po, px, n, qmin, qmax)
}

// BNForward implements compute.Device.
func (e *Device) BNForward(y, x, mean, inv, gamma, beta compute.Buffer, rows, cols int, relu bool) {
	n := rows * cols
	e.run("bn_forward", blocks(n), block, e.ptr(y, n, "bn y"), e.ptr(x, n, "bn x"), e.ptr(mean, cols, "bn mean"),
		e.ptr(inv, cols, "bn inv"), e.ptr(gamma, cols, "bn gamma"), e.ptr(beta, cols, "bn beta"), rows, cols, b2i(relu))
}

// BNGrad implements compute.Device: block sums of dz and dz·h (float64)
// into the scratch, their sums and each column's factor k after them,
// then dx.
func (e *Device) BNGrad(dx, dgamma, dbeta, dz, x, mean, inv, gamma compute.Buffer, rows, cols int, frozen bool) {
	n := rows * cols
	pdx, pdg, pdb := e.ptr(dx, n, "bn_grad dx"), e.ptr(dgamma, cols, "bn_grad dgamma"), e.ptr(dbeta, cols, "bn_grad dbeta")
	pdz, px, pm := e.ptr(dz, n, "bn_grad dz"), e.ptr(x, n, "bn_grad x"), e.ptr(mean, cols, "bn_grad mean")
	pi, pg := e.ptr(inv, cols, "bn_grad inv"), e.ptr(gamma, cols, "bn_grad gamma")
	nb := (rows + compute.ColSumBlock - 1) / compute.ColSumBlock
	if nb == 0 || cols == 0 {
		return
	}
	part := e.scratchOf(4*nb*cols + cols)
	if part == 0 {
		return
	}
	k := part + uint64(16*nb*cols) // the floats after the float64 parts
	cb := colBlock(cols)
	e.run2d("bn_grad_part", (cols+cb-1)/cb, nb, cb, part, pdz, px, pm, pi, rows, cols, compute.ColSumBlock)
	e.run("bn_grad_sums", (cols+cb-1)/cb, cb, pdg, pdb, k, part, pg, pi, nb, rows, cols)
	e.run("bn_grad_dx", blocks(n), block, pdx, pdz, px, pm, pi, pdg, pdb, k, rows, cols, b2i(frozen))
}

// AddAct implements compute.Device.
func (e *Device) AddAct(y, a, b compute.Buffer, n int, relu bool) {
	e.run("add_act", blocks(n), block, e.ptr(y, n, "add y"), e.ptr(a, n, "add a"), e.ptr(b, n, "add b"), n, b2i(relu))
}

// Copy implements compute.Device.
func (e *Device) Copy(dst, src compute.Buffer, n int) {
	e.run("copy_f", blocks(n), block, e.ptr(dst, n, "copy dst"), e.ptr(src, n, "copy src"), n)
}

// GlobalAvgPool implements compute.Device.
func (e *Device) GlobalAvgPool(y, x compute.Buffer, rows, hw, c int) {
	e.run("gap", blocks(rows*c), block, e.ptr(y, rows*c, "gap y"), e.ptr(x, rows*hw*c, "gap x"), rows, hw, c)
}

// GlobalAvgPoolGrad implements compute.Device.
func (e *Device) GlobalAvgPoolGrad(dx, dy compute.Buffer, rows, hw, c int) {
	n := rows * hw * c
	e.run("gap_grad", blocks(n), block, e.ptr(dx, n, "gap_grad dx"), e.ptr(dy, rows*c, "gap_grad dy"), rows, hw, c)
}

// MaxPool implements compute.Device.
func (e *Device) MaxPool(y, arg, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n := rows * compute.ConvOut(h, k, stride, pad) * compute.ConvOut(w, k, stride, pad) * c
	e.run("maxpool", blocks(n), block, e.ptr(y, n, "maxpool y"), e.ptr(arg, n, "maxpool arg"), e.ptr(x, rows*h*w*c, "maxpool x"),
		rows, h, w, c, k, stride, pad)
}

// MaxPoolGrad implements compute.Device.
func (e *Device) MaxPoolGrad(dx, dy, arg compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n, no := rows*h*w*c, rows*compute.ConvOut(h, k, stride, pad)*compute.ConvOut(w, k, stride, pad)*c
	e.run("maxpool_grad", blocks(n), block, e.ptr(dx, n, "maxpool_grad dx"), e.ptr(dy, no, "maxpool_grad dy"), e.ptr(arg, no, "maxpool_grad arg"),
		rows, h, w, c, k, stride, pad)
}

// AvgPool implements compute.Device.
func (e *Device) AvgPool(y, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n := rows * compute.ConvOut(h, k, stride, pad) * compute.ConvOut(w, k, stride, pad) * c
	e.run("avgpool", blocks(n), block, e.ptr(y, n, "avgpool y"), e.ptr(x, rows*h*w*c, "avgpool x"), rows, h, w, c, k, stride, pad)
}

// AvgPoolGrad implements compute.Device.
func (e *Device) AvgPoolGrad(dx, dy compute.Buffer, rows, h, w, c, k, stride, pad int) {
	n, no := rows*h*w*c, rows*compute.ConvOut(h, k, stride, pad)*compute.ConvOut(w, k, stride, pad)*c
	e.run("avgpool_grad", blocks(n), block, e.ptr(dx, n, "avgpool_grad dx"), e.ptr(dy, no, "avgpool_grad dy"), rows, h, w, c, k, stride, pad)
}

// SoftmaxKD implements compute.Device.
func (e *Device) SoftmaxKD(grad, stats, logits, labels, teacher compute.Buffer, rows, cols int, T, alpha, gscale float32) {
	e.run("softmax_kd", blocks(rows), block, e.ptr(grad, rows*cols, "softmax grad"), e.ptr(stats, 3, "softmax stats"),
		e.ptr(logits, rows*cols, "softmax logits"), e.ptr(labels, rows, "softmax labels"), e.ptr(teacher, rows*cols, "softmax teacher"),
		rows, cols, T, alpha, gscale)
}

// RowAbsMax implements compute.Device.
func (e *Device) RowAbsMax(dst, x compute.Buffer, rows, cols int) {
	e.run("row_abs_max", rows, block, e.ptr(dst, rows, "row_abs_max dst"), e.ptr(x, rows*cols, "row_abs_max x"), rows, cols)
}

// FakeQuant implements compute.Device.
func (e *Device) FakeQuant(dst, x, amax compute.Buffer, rows, cols int, q float32) {
	e.run("fake_quant", blocks(rows*cols), block, e.ptr(dst, rows*cols, "fake_quant dst"), e.ptr(x, rows*cols, "fake_quant x"),
		e.ptr(amax, rows, "fake_quant amax"), rows, cols, q)
}

// SGD implements compute.Device.
func (e *Device) SGD(w, v, g, mask compute.Buffer, n int, lr, mu, wd float32) {
	e.run("sgd", blocks(n), block, e.ptr(w, n, "sgd w"), e.ptr(v, n, "sgd v"), e.ptr(g, n, "sgd g"), e.ptr(mask, n, "sgd mask"), n, lr, mu, wd)
}

// Fill implements compute.Device.
func (e *Device) Fill(x compute.Buffer, n int, v float32) {
	e.run("fill", blocks(n), block, e.ptr(x, n, "fill"), n, v)
}
