package compute

// Buffer is memory owned by a Device: n float32 (or int32) elements the
// host cannot read or write except through the Device's Upload and
// Download. Its contents are the Device's business — on a GPU they live in
// device memory; on the strict test device they sit in pages the host may
// not touch.
type Buffer interface {
	// Len is the number of 4-byte elements.
	Len() int
}

// ColSumBlock is the number of rows Device.ColSum sums before adding a
// block's sum to the total.
const ColSumBlock = 256

// Device runs lathe's device-resident training kernels: every tensor of a
// step lives in Buffers, and the host sees only what it uploads (inputs,
// initial weights) and downloads (metrics, checkpoints).
//
// Matrices are row-major and contiguous. Kernels are queued in order and
// may run asynchronously; a failure is sticky and reported by the next
// Sync, Download or Alloc. Kernels panic on shape bugs (a buffer shorter
// than the dimensions say), like Engine.Sgemm.
//
// A Device is used by one goroutine at a time.
type Device interface {
	// Name identifies the device, e.g. "cpu", "strict" or
	// "cuda:0 NVIDIA H100 80GB HBM3".
	Name() string

	// Alloc returns a zeroed buffer of n elements.
	Alloc(n int) (Buffer, error)
	// Free returns b to the device (its pool); b must not be used again.
	Free(b Buffer)
	// Upload copies src into the start of dst.
	Upload(dst Buffer, src []float32) error
	// UploadInt32 copies src into the start of dst as int32 elements (for
	// the index and label kernels).
	UploadInt32(dst Buffer, src []int32) error
	// Download copies the start of src into dst, after every queued kernel.
	Download(dst []float32, src Buffer) error
	// Sync waits for every queued kernel and returns the first failure.
	Sync() error
	// Close releases everything the device holds.
	Close() error

	// Gemm computes C = alpha·op(A)·op(B) + beta·C for contiguous row-major
	// op(A) m×k, op(B) k×n, C m×n (beta 0 ignores C's contents).
	Gemm(transA, transB bool, m, n, k int, alpha float32, a, b Buffer, beta float32, c Buffer)

	// BiasAct adds bias[j] to every row of y (rows×cols) and, when relu,
	// replaces negatives by zero.
	BiasAct(y, bias Buffer, rows, cols int, relu bool)
	// ReLUGrad sets dx[i] = dy[i] where y[i] > 0 and 0 elsewhere (n elements;
	// dx may be dy).
	ReLUGrad(dx, dy, y Buffer, n int)
	// ColSum sets dst[j] = Σ_i x[i, j] over rows×cols x: rows are summed
	// in order within blocks of ColSumBlock, and the blocks' sums in order
	// (so that a GPU can sum the blocks in parallel and still agree with
	// the host to the bit).
	ColSum(dst, x Buffer, rows, cols int)
	// GatherRows sets dst's row r to src's row idx[off+r] for r < rows
	// (idx: int32; src and dst rows of width elements).
	GatherRows(dst, src, idx Buffer, off, rows, width int)

	// GatherShifted is GatherRows for images: dst's row r is image
	// idx[off+r] of src (h×w pixels each) — mirrored left to right when
	// shifts[3i+2] is not 0 — translated by (dy, dx) = (shifts[3i],
	// shifts[3i+1]) for that image i, zero-filled (shifts: int32, three per
	// image of src).
	GatherShifted(dst, src, idx, shifts Buffer, off, rows, h, w int)
	// DropoutMask sets mask[i] to scale where a hash of (seed, i) drawn
	// uniform in [0, 1) is at least p, and to 0 elsewhere (the same bits on
	// every device).
	DropoutMask(mask Buffer, n int, p, scale float32, seed uint64)
	// Mul sets x[i] *= y[i] for n elements.
	Mul(x, y Buffer, n int)

	// Im2col lays out the k×k patches, moved by stride over rows NHWC
	// images x (h×w×c) with pad zeros on each side, as the rows of col
	// ([rows·oh·ow, k·k·c], (ky, kx, c) order, oh = (h+2·pad−k)/stride+1,
	// ConvOut): a convolution becomes col·Wᵀ for filters W [f, k, k, c].
	Im2col(col, x Buffer, rows, h, w, c, k, stride, pad int)
	// Col2im is Im2col's adjoint: dx[b, y, x, c] = the sum, over the
	// patches covering it in (ky, kx) order, of their dcol entries.
	Col2im(dx, dcol Buffer, rows, h, w, c, k, stride, pad int)
	// MaxPool takes the maxima of k×k windows moved by stride over rows
	// NHWC images x (h×w×c; padding never wins) into y ([rows, oh, ow, c],
	// ConvOut) and records each one's offset in its image (int32, the first
	// of equal values in window order) in arg.
	MaxPool(y, arg, x Buffer, rows, h, w, c, k, stride, pad int)
	// MaxPoolGrad routes dy back through arg: dx[b, y, x, j] is the sum of
	// dy over the windows whose maximum it was, in output order (zero where
	// none).
	MaxPoolGrad(dx, dy, arg Buffer, rows, h, w, c, k, stride, pad int)
	// AvgPool averages k×k windows moved by stride over rows NHWC images x
	// (h×w×c) into y: each window's sum over its taps in order (padding
	// counting as 0), divided by k·k.
	AvgPool(y, x Buffer, rows, h, w, c, k, stride, pad int)
	// AvgPoolGrad is its input gradient: dx[b, y, x, j] is the sum, over
	// the windows covering it in output order, of dy/(k·k).
	AvgPoolGrad(dx, dy Buffer, rows, h, w, c, k, stride, pad int)

	// BNStats sets mean[j] and inv[j] = 1/√(var_j + eps) from the mean
	// and biased variance of column j of x (rows×cols: NHWC positions by
	// channels), both from float64 sums of x and x² taken in blocks of
	// ColSumBlock rows, the blocks added in order (var = E[x²] − mean²,
	// at least 0). With rmean and rvar (not nil) it then moves the running
	// statistics toward the batch's in float64: r = (1−momentum)·r +
	// momentum·batch, the variance unbiased by rows/(rows−1).
	BNStats(mean, inv, rmean, rvar, x Buffer, rows, cols int, momentum, eps float64)
	// BNScale sets s[j] = gamma[j]/√(vr[j] + eps) in float64, rounded, for
	// cols values (gamma nil: 1 — evaluation's 1/σ from the running
	// variance; with gamma, the factor a batch norm folds into its
	// convolution, graph.BNScale).
	BNScale(s, gamma, vr Buffer, cols int, eps float64)
	// BNForward sets y[r, j] = h·gamma[j] + beta[j] with h = (x[r, j] −
	// mean[j])·inv[j], then ReLU when relu (float32, never fused).
	BNForward(y, x, mean, inv, gamma, beta Buffer, rows, cols int, relu bool)
	// BNGrad is BNForward's backward pass in training, from dz (the
	// gradient of h·gamma + beta): dbeta = Σ dz and dgamma = Σ dz·h per
	// column (float64 sums in BNStats' order, rounded), and dx = k·((rows·dz −
	// dbeta) − h·dgamma) with k = gamma·inv/rows — or, with frozen
	// statistics (constants), dx = k·(rows·dz).
	BNGrad(dx, dgamma, dbeta, dz, x, mean, inv, gamma Buffer, rows, cols int, frozen bool)
	// ScaleRows sets dst[r, j] = x[r, j]·s[r] (dst may be x).
	ScaleRows(dst, x, s Buffer, rows, cols int)
	// DivCols sets dst[r, j] = x[r, j]/s[j], or 0 where s[j] is 0 (dst may
	// be x).
	DivCols(dst, x, s Buffer, rows, cols int)
	// ActQuant fake-quantizes n activations x into y with an observer's
	// range, asymmetric to bits, and sets inside[i] to 1 where x[i] fell in
	// the range (0 elsewhere: the straight-through gradient's mask). obs
	// holds the observer [min, max, initialized (0 or 1), scale, zero
	// point]; with observe, the batch's min and max (each with 0) are first
	// folded in: taken as they are by an observer not yet initialized, else
	// min = m·min + (1−m)·lo with m = momentum (float32). Scale and zero
	// point are kernels.ScaleZero's of [min, max], stored in obs.
	ActQuant(y, inside, obs, x Buffer, n, bits int, momentum float32, observe bool)
	// ReLU6 sets y[i] = min(max(y[i], 0), 6) for n elements.
	ReLU6(y Buffer, n int)
	// ReLU6Grad sets dx[i] = dy[i] where 0 < y[i] < 6 and 0 elsewhere (dx
	// may be dy).
	ReLU6Grad(dx, dy, y Buffer, n int)
	// DepthwiseConv convolves each of the c channels of rows NHWC images x
	// (h×w×c) with its own k×k filter of wt ([c, k, k]) moved by stride
	// with pad zeros around: y[b, oy, ox, j] = Σ over (ky, kx) in order of
	// x[b, oy·stride−pad+ky, ox·stride−pad+kx, j]·wt[j, ky, kx] (float32,
	// never fused).
	DepthwiseConv(y, x, wt Buffer, rows, h, w, c, k, stride, pad int)
	// DepthwiseConvGradX is its input gradient: dx[b, y, x, j] = the sum,
	// over the taps (ky, kx) in order whose window covers it, of dy·wt.
	DepthwiseConvGradX(dx, dy, wt Buffer, rows, h, w, c, k, stride, pad int)
	// DepthwiseConvGradW is its filter gradient: dwt[j, ky, kx] = the sum
	// over output positions of dy·x, in blocks of ColSumBlock positions
	// (image by image, row by row), the blocks added in order.
	DepthwiseConvGradW(dwt, dy, x Buffer, rows, h, w, c, k, stride, pad int)
	// AddAct sets y = a + b for n elements, then ReLU when relu (y may be
	// a or b).
	AddAct(y, a, b Buffer, n int, relu bool)
	// Copy sets dst[i] = src[i] for n elements.
	Copy(dst, src Buffer, n int)
	// GlobalAvgPool sets y[r, j] to the mean of x[r, p, j] over the hw
	// positions p (a float32 sum in position order, divided by hw).
	GlobalAvgPool(y, x Buffer, rows, hw, c int)
	// GlobalAvgPoolGrad sets dx[r, p, j] = dy[r, j] / hw.
	GlobalAvgPoolGrad(dx, dy Buffer, rows, hw, c int)

	// SoftmaxKD computes, per row of logits (rows×cols), the loss
	// (1−α)·CE(softmax(s), y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T)) with
	// labels y (int32) and teacher logits t (nil: α is taken as 0), writes
	// its gradient with respect to s times gscale into grad (nil: none),
	// and adds the rows' summed loss to stats[0], their count of correct
	// top-1 predictions to stats[1] and their summed distillation term
	// α·T²·KL to stats[2].
	SoftmaxKD(grad, stats, logits, labels, teacher Buffer, rows, cols int, T, alpha, gscale float32)

	// RowAbsMax sets dst[r] = max_j |x[r, j]| (rows×cols).
	RowAbsMax(dst, x Buffer, rows, cols int)
	// FakeQuant sets dst[r, j] = clamp(round(x[r, j]·(1/s_r)), −q, q)·s_r
	// with s_r = amax[r]/q (rounding half to even; s_r = 0 gives 0):
	// symmetric per-row quantization to q = 2^(bits−1) − 1 levels each
	// side, the arithmetic of compress.QuantParams.
	FakeQuant(dst, x, amax Buffer, rows, cols int, q float32)

	// SGD applies a momentum step to n weights: g' = g + wd·w, v = mu·v + g',
	// w = w − lr·v; with a mask, w and v are then multiplied by it.
	SGD(w, v, g, mask Buffer, n int, lr, mu, wd float32)
	// Fill sets the first n elements of x to v.
	Fill(x Buffer, n int, v float32)
}

// ConvOut is the output height (or width) of a convolution of kernel k
// moved by stride over n pixels with pad zeros on each side.
func ConvOut(n, k, stride, pad int) int { return (n+2*pad-k)/stride + 1 }
