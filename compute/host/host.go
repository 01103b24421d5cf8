package host

import (
	"errors"
	"fmt"
	"math"
	"syscall"
	"unsafe"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// Device is the host device. Its kernels are plain Go loops (GEMM goes to
// the compute.Engine it was given) and run serially, so results are
// bit-reproducible.
type Device struct {
	eng    compute.Engine
	strict bool
	live   map[*buffer]struct{}
	err    error
	closed bool
	// Kernels counts kernel calls; Faults-free strict runs are proved by
	// tests, this tells them how much ran.
	Kernels int
}

var _ compute.Device = (*Device)(nil)

type buffer struct {
	f      []float32
	region []byte // the mapping (strict only)
}

func (b *buffer) Len() int { return len(b.f) }

// New returns the reference device computing with eng.
func New(eng compute.Engine) *Device {
	return &Device{eng: eng, live: map[*buffer]struct{}{}}
}

// NewStrict returns the strict device: the same kernels, but every buffer
// is its own anonymous mapping, PROT_NONE outside the device's calls. A
// host access to device memory then raises SIGSEGV, which a goroutine
// with debug.SetPanicOnFault(true) sees as a panic.
func NewStrict(eng compute.Engine) *Device {
	d := New(eng)
	d.strict = true
	return d
}

// Name implements compute.Device.
func (d *Device) Name() string {
	if d.strict {
		return "strict"
	}
	return "cpu"
}

// Alloc implements compute.Device.
func (d *Device) Alloc(n int) (compute.Buffer, error) {
	if d.closed {
		return nil, errors.New("host: device closed")
	}
	if n < 0 {
		return nil, fmt.Errorf("host: alloc of %d elements", n)
	}
	b := &buffer{}
	if !d.strict {
		b.f = make([]float32, n)
	} else if n > 0 {
		page := syscall.Getpagesize()
		size := (4*n + page - 1) / page * page
		r, err := syscall.Mmap(-1, 0, size, syscall.PROT_NONE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			return nil, fmt.Errorf("host: strict alloc of %d elements: %w", n, err)
		}
		b.region = r
		b.f = unsafe.Slice((*float32)(unsafe.Pointer(&r[0])), n)
	}
	d.live[b] = struct{}{}
	return b, nil
}

// Free implements compute.Device.
func (d *Device) Free(cb compute.Buffer) {
	b := d.buf(cb)
	delete(d.live, b)
	if b.region != nil {
		_ = syscall.Munmap(b.region)
	}
	b.f, b.region = nil, nil
}

// Close implements compute.Device: it frees every live buffer.
func (d *Device) Close() error {
	for b := range d.live {
		d.Free(b)
	}
	d.closed = true
	return nil
}

func (d *Device) buf(b compute.Buffer) *buffer {
	hb, ok := b.(*buffer)
	if !ok {
		panic(fmt.Sprintf("host: buffer of another device (%T)", b))
	}
	if _, ok := d.live[hb]; !ok {
		panic("host: buffer freed or of another device")
	}
	return hb
}

// open makes the buffers accessible for the duration of one call and
// returns the function that closes them again.
func (d *Device) open(bs ...compute.Buffer) func() {
	d.Kernels++
	if !d.strict {
		for _, b := range bs {
			if b != nil {
				d.buf(b)
			}
		}
		return func() {}
	}
	var opened [][]byte
	for _, cb := range bs {
		if cb == nil {
			continue
		}
		b := d.buf(cb)
		if b.region == nil {
			continue
		}
		if err := syscall.Mprotect(b.region, syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			panic(fmt.Sprintf("host: strict: mprotect: %v", err))
		}
		opened = append(opened, b.region)
	}
	return func() {
		for _, r := range opened {
			if err := syscall.Mprotect(r, syscall.PROT_NONE); err != nil {
				panic(fmt.Sprintf("host: strict: mprotect: %v", err))
			}
		}
	}
}

func (d *Device) f(b compute.Buffer) []float32 {
	if b == nil {
		return nil
	}
	return d.buf(b).f
}

func (d *Device) i32(b compute.Buffer) []int32 {
	f := d.buf(b).f
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&f[0])), len(f))
}

func need(name string, b []float32, n int) {
	if len(b) < n {
		panic(fmt.Sprintf("host: %s: %d elements, need %d", name, len(b), n))
	}
}

// Upload implements compute.Device.
func (d *Device) Upload(dst compute.Buffer, src []float32) error {
	defer d.open(dst)()
	f := d.f(dst)
	if len(src) > len(f) {
		return fmt.Errorf("host: upload of %d elements into a buffer of %d", len(src), len(f))
	}
	copy(f, src)
	return nil
}

// UploadInt32 implements compute.Device: the same bytes as float32s.
func (d *Device) UploadInt32(dst compute.Buffer, src []int32) error {
	return d.Upload(dst, asFloat32s(src))
}

// asFloat32s views int32s as float32s of the same bits.
func asFloat32s(x []int32) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
}

// Download implements compute.Device.
func (d *Device) Download(dst []float32, src compute.Buffer) error {
	defer d.open(src)()
	f := d.f(src)
	if len(dst) > len(f) {
		return fmt.Errorf("host: download of %d elements from a buffer of %d", len(dst), len(f))
	}
	copy(dst, f)
	return d.err
}

// Sync implements compute.Device.
func (d *Device) Sync() error { return d.err }

// Gemm implements compute.Device.
func (d *Device) Gemm(transA, transB bool, m, n, k int, alpha float32, a, b compute.Buffer, beta float32, c compute.Buffer) {
	defer d.open(a, b, c)()
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	d.eng.Sgemm(transA, transB, m, n, k, alpha, d.f(a), lda, d.f(b), ldb, beta, d.f(c), n)
}

// BiasAct implements compute.Device.
func (d *Device) BiasAct(y, bias compute.Buffer, rows, cols int, relu bool) {
	defer d.open(y, bias)()
	yf, bf := d.f(y), d.f(bias)
	need("bias_act y", yf, rows*cols)
	need("bias_act bias", bf, cols)
	for r := 0; r < rows; r++ {
		row := yf[r*cols : (r+1)*cols]
		for j := range row {
			v := row[j] + bf[j]
			if relu && !(v > 0) {
				v = 0
			}
			row[j] = v
		}
	}
}

// ReLUGrad implements compute.Device.
func (d *Device) ReLUGrad(dx, dy, y compute.Buffer, n int) {
	defer d.open(dx, dy, y)()
	xf, df, yf := d.f(dx), d.f(dy), d.f(y)
	need("relu_grad dx", xf, n)
	need("relu_grad dy", df, n)
	need("relu_grad y", yf, n)
	for i := 0; i < n; i++ {
		if yf[i] > 0 {
			xf[i] = df[i]
		} else {
			xf[i] = 0
		}
	}
}

// ColSum implements compute.Device.
func (d *Device) ColSum(dst, x compute.Buffer, rows, cols int) {
	defer d.open(dst, x)()
	df, xf := d.f(dst), d.f(x)
	need("col_sum dst", df, cols)
	need("col_sum x", xf, rows*cols)
	for j := 0; j < cols; j++ {
		var s float32
		for lo := 0; lo < rows; lo += compute.ColSumBlock {
			var part float32
			for r := lo; r < min(lo+compute.ColSumBlock, rows); r++ {
				part += xf[r*cols+j]
			}
			s += part
		}
		df[j] = s
	}
}

// GatherRows implements compute.Device.
func (d *Device) GatherRows(dst, src, idx compute.Buffer, off, rows, width int) {
	defer d.open(dst, src, idx)()
	df, sf, ix := d.f(dst), d.f(src), d.i32(idx)
	need("gather dst", df, rows*width)
	if len(ix) < off+rows {
		panic(fmt.Sprintf("host: gather idx: %d elements, need %d", len(ix), off+rows))
	}
	for r := 0; r < rows; r++ {
		i := int(ix[off+r])
		if i < 0 || (i+1)*width > len(sf) {
			panic(fmt.Sprintf("host: gather: row %d outside the source", i))
		}
		copy(df[r*width:(r+1)*width], sf[i*width:(i+1)*width])
	}
}

// GatherShifted implements compute.Device.
func (d *Device) GatherShifted(dst, src, idx, shifts compute.Buffer, off, rows, h, w int) {
	defer d.open(dst, src, idx, shifts)()
	df, sf, ix, sh := d.f(dst), d.f(src), d.i32(idx), d.i32(shifts)
	f := h * w
	need("gather_shifted dst", df, rows*f)
	if len(ix) < off+rows {
		panic(fmt.Sprintf("host: gather_shifted idx: %d elements, need %d", len(ix), off+rows))
	}
	for r := 0; r < rows; r++ {
		i := int(ix[off+r])
		if i < 0 || (i+1)*f > len(sf) || 3*i+2 >= len(sh) {
			panic(fmt.Sprintf("host: gather_shifted: image %d outside the source", i))
		}
		dy, dx, flip := int(sh[3*i]), int(sh[3*i+1]), sh[3*i+2] != 0
		img, out := sf[i*f:(i+1)*f], df[r*f:(r+1)*f]
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				sy, sx := y-dy, x-dx
				switch {
				case sy < 0 || sy >= h || sx < 0 || sx >= w:
					out[y*w+x] = 0
				case flip:
					out[y*w+x] = img[sy*w+w-1-sx]
				default:
					out[y*w+x] = img[sy*w+sx]
				}
			}
		}
	}
}

// Uniform24 is the dropout draw of element i under seed: a splitmix64
// hash's top 24 bits as a float in [0, 1). The CUDA kernel computes the same.
func Uniform24(seed uint64, i int) float32 {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40) * (1.0 / (1 << 24))
}

// DropoutMask implements compute.Device.
func (d *Device) DropoutMask(mask compute.Buffer, n int, p, scale float32, seed uint64) {
	defer d.open(mask)()
	mf := d.f(mask)
	need("dropout_mask", mf, n)
	for i := range mf[:n] {
		if Uniform24(seed, i) >= p {
			mf[i] = scale
		} else {
			mf[i] = 0
		}
	}
}

// Mul implements compute.Device.
func (d *Device) Mul(x, y compute.Buffer, n int) {
	defer d.open(x, y)()
	xf, yf := d.f(x), d.f(y)
	need("mul x", xf, n)
	need("mul y", yf, n)
	for i := range xf[:n] {
		xf[i] *= yf[i]
	}
}

// Im2col implements compute.Device.
func (d *Device) Im2col(col, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(col, x)()
	cf, xf := d.f(col), d.f(x)
	win := kernels.Window{H: h, W: w, C: c, K: k, Stride: stride, Pad: pad}
	oh, ow := win.Out()
	per, isz := oh*ow*k*k*c, h*w*c
	need("im2col col", cf, rows*per)
	need("im2col x", xf, rows*isz)
	for b := 0; b < rows; b++ {
		win.Im2col(cf[b*per:(b+1)*per], xf[b*isz:(b+1)*isz], 0, c)
	}
}

// Col2im implements compute.Device: each input element gathers the
// patch entries covering it, in (ky, kx) order.
func (d *Device) Col2im(dx, dcol compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(dx, dcol)()
	xf, cf := d.f(dx), d.f(dcol)
	g := newWindow(h, w, k, stride, pad)
	kkc, isz := k*k*c, h*w*c
	need("col2im dx", xf, rows*isz)
	need("col2im dcol", cf, rows*g.oh*g.ow*kkc)
	for b := range rows {
		for y := range h {
			for x := range w {
				for ch := range c {
					var s float32
					g.covering(y, x, func(t, oy, ox int) { s += cf[((b*g.oh+oy)*g.ow+ox)*kkc+t*c+ch] })
					xf[b*isz+(y*w+x)*c+ch] = s
				}
			}
		}
	}
}

// MaxPool implements compute.Device.
func (d *Device) MaxPool(y, arg, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(y, arg, x)()
	yf, af, xf := d.f(y), d.i32(arg), d.f(x)
	g := newWindow(h, w, k, stride, pad)
	isz, osz := h*w*c, g.oh*g.ow*c
	need("maxpool y", yf, rows*osz)
	need("maxpool x", xf, rows*isz)
	if len(af) < rows*osz {
		panic(fmt.Sprintf("host: maxpool arg: %d elements, need %d", len(af), rows*osz))
	}
	for b := range rows {
		img := xf[b*isz : (b+1)*isz]
		for oy := range g.oh {
			for ox := range g.ow {
				for ch := range c {
					at := -1
					var best float32
					g.taps(oy, ox, func(_, iy, ix int) {
						if off := (iy*w+ix)*c + ch; at < 0 || img[off] > best {
							best, at = img[off], off
						}
					})
					o := b*osz + (oy*g.ow+ox)*c + ch
					yf[o], af[o] = best, int32(at)
				}
			}
		}
	}
}

// MaxPoolGrad implements compute.Device.
func (d *Device) MaxPoolGrad(dx, dy, arg compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(dx, dy, arg)()
	xf, yf, af := d.f(dx), d.f(dy), d.i32(arg)
	g := newWindow(h, w, k, stride, pad)
	isz, osz := h*w*c, g.oh*g.ow*c
	need("maxpool_grad dx", xf, rows*isz)
	need("maxpool_grad dy", yf, rows*osz)
	for b := range rows {
		for y := range h {
			for x := range w {
				for ch := range c {
					off := (y*w+x)*c + ch
					var s float32
					g.outputs(y, x, func(oy, ox int) {
						if o := b*osz + (oy*g.ow+ox)*c + ch; int(af[o]) == off {
							s += yf[o]
						}
					})
					xf[b*isz+off] = s
				}
			}
		}
	}
}

// AvgPool implements compute.Device.
func (d *Device) AvgPool(y, x compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(y, x)()
	yf, xf := d.f(y), d.f(x)
	g := newWindow(h, w, k, stride, pad)
	need("avgpool y", yf, rows*g.oh*g.ow*c)
	need("avgpool x", xf, rows*h*w*c)
	for b := range rows {
		for oy := range g.oh {
			for ox := range g.ow {
				for ch := range c {
					var s float32
					g.taps(oy, ox, func(_, iy, ix int) { s += xf[((b*h+iy)*w+ix)*c+ch] })
					yf[((b*g.oh+oy)*g.ow+ox)*c+ch] = s / float32(k*k)
				}
			}
		}
	}
}

// AvgPoolGrad implements compute.Device.
func (d *Device) AvgPoolGrad(dx, dy compute.Buffer, rows, h, w, c, k, stride, pad int) {
	defer d.open(dx, dy)()
	xf, yf := d.f(dx), d.f(dy)
	g := newWindow(h, w, k, stride, pad)
	need("avgpool_grad dx", xf, rows*h*w*c)
	need("avgpool_grad dy", yf, rows*g.oh*g.ow*c)
	div := float32(k * k)
	for b := range rows {
		for y := range h {
			for x := range w {
				for ch := range c {
					var s float32
					g.outputs(y, x, func(oy, ox int) { s += yf[((b*g.oh+oy)*g.ow+ox)*c+ch] / div })
					xf[((b*h+y)*w+x)*c+ch] = s
				}
			}
		}
	}
}

// SoftmaxKD implements compute.Device in float32 arithmetic, the way the
// GPU kernel computes it (exp and log through float64 and rounded).
func (d *Device) SoftmaxKD(grad, stats, logits, labels, teacher compute.Buffer, rows, cols int, T, alpha, gscale float32) {
	defer d.open(grad, stats, logits, labels, teacher)()
	gf, st, lf, lab, tf := d.f(grad), d.f(stats), d.f(logits), d.i32(labels), d.f(teacher)
	need("softmax logits", lf, rows*cols)
	need("softmax stats", st, 3)
	if gf != nil {
		need("softmax grad", gf, rows*cols)
	}
	if tf == nil {
		alpha = 0
	} else {
		need("softmax teacher", tf, rows*cols)
	}
	var lossSum, correct, kdSum float32
	for r := 0; r < rows; r++ {
		s := lf[r*cols : (r+1)*cols]
		y := int(lab[r])
		if y < 0 || y >= cols {
			panic(fmt.Sprintf("host: softmax: label %d outside [0, %d)", y, cols))
		}
		// Plain softmax and log-sum-exp.
		m1, arg := s[0], 0
		for j, v := range s {
			if v > m1 {
				m1, arg = v, j
			}
		}
		if arg == y {
			correct++
		}
		var z1 float32
		for _, v := range s {
			z1 += exp32(v - m1)
		}
		loss := (1 - alpha) * (log32(z1) - (s[y] - m1))
		var zs, zt, mt float32
		ms := m1 / T
		if alpha != 0 {
			t := tf[r*cols : (r+1)*cols]
			mt = t[0] / T
			for _, v := range t {
				mt = max(mt, v/T)
			}
			for j := range s {
				zs += exp32(s[j]/T - ms)
				zt += exp32(t[j]/T - mt)
			}
			var kl float32
			for j := range s {
				lpt := t[j]/T - mt - log32(zt)
				lps := s[j]/T - ms - log32(zs)
				kl += exp32(lpt) * (lpt - lps)
			}
			loss += alpha * T * T * kl
			kdSum += alpha * T * T * kl
		}
		lossSum += loss
		if gf != nil {
			g := gf[r*cols : (r+1)*cols]
			for j := range g {
				p1 := exp32(s[j]-m1) / z1
				if j == y {
					p1 -= 1
				}
				v := (1 - alpha) * p1
				if alpha != 0 {
					t := tf[r*cols : (r+1)*cols]
					v += alpha * T * (exp32(s[j]/T-ms)/zs - exp32(t[j]/T-mt)/zt)
				}
				g[j] = v * gscale
			}
		}
	}
	st[0] += lossSum
	st[1] += correct
	st[2] += kdSum
}

func exp32(x float32) float32 { return float32(math.Exp(float64(x))) }
func log32(x float32) float32 { return float32(math.Log(float64(x))) }

// RowAbsMax implements compute.Device.
func (d *Device) RowAbsMax(dst, x compute.Buffer, rows, cols int) {
	defer d.open(dst, x)()
	df, xf := d.f(dst), d.f(x)
	need("row_abs_max dst", df, rows)
	need("row_abs_max x", xf, rows*cols)
	for r := 0; r < rows; r++ {
		var m float32
		for _, v := range xf[r*cols : (r+1)*cols] {
			m = max(m, abs32(v))
		}
		df[r] = m
	}
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// FakeQuant implements compute.Device.
func (d *Device) FakeQuant(dst, x, amax compute.Buffer, rows, cols int, q float32) {
	defer d.open(dst, x, amax)()
	df, xf, af := d.f(dst), d.f(x), d.f(amax)
	need("fake_quant dst", df, rows*cols)
	need("fake_quant x", xf, rows*cols)
	need("fake_quant amax", af, rows)
	for r := 0; r < rows; r++ {
		s := af[r] / q
		for j := r * cols; j < (r+1)*cols; j++ {
			df[j] = quant(xf[j], s, q)
		}
	}
}

// quant is one fake-quantized value; the CUDA kernel computes the same
// float32 operations.
func quant(x, s, q float32) float32 {
	if s == 0 {
		return 0
	}
	c := float32(math.RoundToEven(float64(x * (1 / s))))
	c = min(max(c, -q), q)
	return c * s
}

// SGD implements compute.Device.
func (d *Device) SGD(w, v, g, mask compute.Buffer, n int, lr, mu, wd float32) {
	defer d.open(w, v, g, mask)()
	wf, vf, gf, mf := d.f(w), d.f(v), d.f(g), d.f(mask)
	need("sgd w", wf, n)
	need("sgd v", vf, n)
	need("sgd g", gf, n)
	if mf != nil {
		need("sgd mask", mf, n)
	}
	for i := 0; i < n; i++ {
		// Explicit conversions keep each product rounded (no FMA), as the
		// CUDA kernel computes it.
		gi := gf[i] + float32(wd*wf[i])
		vi := float32(mu*vf[i]) + gi
		wi := wf[i] - float32(lr*vi)
		if mf != nil {
			wi *= mf[i]
			vi *= mf[i]
		}
		wf[i], vf[i] = wi, vi
	}
}

// Fill implements compute.Device.
func (d *Device) Fill(x compute.Buffer, n int, v float32) {
	defer d.open(x)()
	f := d.f(x)
	need("fill", f, n)
	for i := range f[:n] {
		f[i] = v
	}
}
