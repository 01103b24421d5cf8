// lathe's device-resident training kernels, compiled at run time by NVRTC
// for the GPU found (compute/cuda/engine.go). Each mirrors the method of
// compute.Device it serves; compute/host holds the reference in Go, and
// the shared engine suite checks one against the other.

#define BLOCK 256

extern "C" __global__ void bias_act(float* y, const float* b, int rows, int cols, int relu) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * cols) return;
    float v = y[i] + b[i % cols];
    if (relu && !(v > 0.0f)) v = 0.0f;
    y[i] = v;
}

extern "C" __global__ void relu_grad(float* dx, const float* dy, const float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// Column sums in two passes, in the host's order (blocks of per =
// compute.ColSumBlock rows): col_sum_part gives one thread to each
// (column, block) to sum the block's rows in order; col_sum adds the
// blocks in order.
extern "C" __global__ void col_sum_part(float* part, const float* x, int rows, int cols, int per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int blk = blockIdx.y;
    if (j >= cols) return;
    int lo = blk * per, hi = min(lo + per, rows);
    float s = 0.0f;
    for (int r = lo; r < hi; r++) s = __fadd_rn(s, x[(long)r * cols + j]);
    part[(long)blk * cols + j] = s;
}

extern "C" __global__ void col_sum(float* dst, const float* part, int blocks, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float s = 0.0f;
    for (int b = 0; b < blocks; b++) s = __fadd_rn(s, part[(long)b * cols + j]);
    dst[j] = s;
}

extern "C" __global__ void gather_rows(float* dst, const float* src, const int* idx, int off, int rows, int width) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    dst[i] = src[(long)idx[off + r] * width + c];
}

// One thread per row; the same float32 operations as the host reference.
extern "C" __global__ void softmax_kd(float* grad, float* stats, const float* logits, const int* labels,
                                      const float* teacher, int rows, int cols, float T, float alpha,
                                      float gscale) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    float loss = 0.0f, correct = 0.0f, kd = 0.0f;
    if (r < rows) {
        const float* s = logits + (long)r * cols;
        int y = labels[r];
        if (teacher == 0) alpha = 0.0f;
        float m1 = s[0];
        int arg = 0;
        for (int j = 1; j < cols; j++) if (s[j] > m1) { m1 = s[j]; arg = j; }
        if (arg == y) correct = 1.0f;
        float z1 = 0.0f;
        for (int j = 0; j < cols; j++) z1 += expf(s[j] - m1);
        loss = (1.0f - alpha) * (logf(z1) - (s[y] - m1));
        float zs = 0.0f, zt = 0.0f, mt = 0.0f, ms = m1 / T;
        const float* t = 0;
        if (alpha != 0.0f) {
            t = teacher + (long)r * cols;
            mt = t[0] / T;
            for (int j = 0; j < cols; j++) mt = fmaxf(mt, t[j] / T);
            for (int j = 0; j < cols; j++) {
                zs += expf(s[j] / T - ms);
                zt += expf(t[j] / T - mt);
            }
            float kl = 0.0f, lzt = logf(zt), lzs = logf(zs);
            for (int j = 0; j < cols; j++) {
                float lpt = t[j] / T - mt - lzt;
                float lps = s[j] / T - ms - lzs;
                kl += expf(lpt) * (lpt - lps);
            }
            kd = alpha * T * T * kl;
            loss += kd;
        }
        if (grad != 0) {
            float* g = grad + (long)r * cols;
            for (int j = 0; j < cols; j++) {
                float p1 = expf(s[j] - m1) / z1;
                if (j == y) p1 -= 1.0f;
                float v = (1.0f - alpha) * p1;
                if (alpha != 0.0f) v += alpha * T * (expf(s[j] / T - ms) / zs - expf(t[j] / T - mt) / zt);
                g[j] = v * gscale;
            }
        }
    }
    __shared__ float sl[BLOCK], sc[BLOCK], sk[BLOCK];
    sl[threadIdx.x] = loss;
    sc[threadIdx.x] = correct;
    sk[threadIdx.x] = kd;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            sl[threadIdx.x] += sl[threadIdx.x + k];
            sc[threadIdx.x] += sc[threadIdx.x + k];
            sk[threadIdx.x] += sk[threadIdx.x + k];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        atomicAdd(&stats[0], sl[0]);
        atomicAdd(&stats[1], sc[0]);
        atomicAdd(&stats[2], sk[0]);
    }
}

// One block per row.
extern "C" __global__ void row_abs_max(float* dst, const float* x, int rows, int cols) {
    __shared__ float sm[BLOCK];
    int r = blockIdx.x;
    float m = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, fabsf(x[(long)r * cols + j]));
    sm[threadIdx.x] = m;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sm[threadIdx.x] = fmaxf(sm[threadIdx.x], sm[threadIdx.x + k]);
        __syncthreads();
    }
    if (threadIdx.x == 0) dst[r] = sm[0];
}

extern "C" __global__ void fake_quant(float* dst, const float* x, const float* amax, int rows, int cols, float q) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * cols) return;
    float s = __fdiv_rn(amax[i / cols], q);
    if (s == 0.0f) { dst[i] = 0.0f; return; }
    float c = rintf(__fmul_rn(x[i], __fdiv_rn(1.0f, s)));
    c = fminf(fmaxf(c, -q), q);
    dst[i] = __fmul_rn(c, s);
}

// Plain multiplies and adds, never contracted to FMA, as the host computes.
extern "C" __global__ void sgd(float* w, float* v, const float* g, const float* mask, int n, float lr, float mu, float wd) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = __fadd_rn(g[i], __fmul_rn(wd, w[i]));
    float vi = __fadd_rn(__fmul_rn(mu, v[i]), gi);
    float wi = __fsub_rn(w[i], __fmul_rn(lr, vi));
    if (mask != 0) {
        wi = __fmul_rn(wi, mask[i]);
        vi = __fmul_rn(vi, mask[i]);
    }
    w[i] = wi;
    v[i] = vi;
}

extern "C" __global__ void fill(float* x, int n, float v) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}

extern "C" __global__ void gather_shifted(float* dst, const float* src, const int* idx, const int* shifts, int off,
                                          int rows, int h, int w) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long f = (long)h * w;
    if (i >= (long)rows * f) return;
    int r = (int)(i / f), p = (int)(i % f);
    int img = idx[off + r];
    int y = p / w - shifts[3 * img], x = p % w - shifts[3 * img + 1];
    if (shifts[3 * img + 2] != 0) x = w - 1 - x;
    dst[i] = (y < 0 || y >= h || x < 0 || x >= w) ? 0.0f : src[(long)img * f + (long)y * w + x];
}

// The host's Uniform24: splitmix64 of seed + (i+1)·golden, top 24 bits.
extern "C" __global__ void dropout_mask(float* mask, int n, float p, float scale, unsigned long long seed) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    float u = (float)(z >> 40) * (1.0f / 16777216.0f);
    mask[i] = u >= p ? scale : 0.0f;
}

extern "C" __global__ void mul(float* x, const float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fmul_rn(x[i], y[i]);
}

// One thread per col element: (patch row, (ky, kx, c)); padding reads 0.
extern "C" __global__ void im2col(float* col, const float* x, int rows, int h, int w, int c, int k, int stride, int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1, kkc = k * k * c;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * oh * ow * kkc) return;
    long r = i / kkc;
    int j = (int)(i % kkc);
    int b = (int)(r / (oh * ow)), p = (int)(r % (oh * ow));
    int iy = (p / ow) * stride - pad + j / (k * c), ix = (p % ow) * stride - pad + (j / c) % k, ch = j % c;
    col[i] = (iy < 0 || iy >= h || ix < 0 || ix >= w) ? 0.0f : x[(long)b * h * w * c + ((long)iy * w + ix) * c + ch];
}

// One thread per input element, the patches covering it summed in (ky, kx)
// order.
extern "C" __global__ void col2im(float* dx, const float* dcol, int rows, int h, int w, int c, int k, int stride, int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1, kkc = k * k * c;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * h * w * c) return;
    int b = (int)(i / ((long)h * w * c)), q = (int)(i % ((long)h * w * c));
    int y = q / (w * c), x = (q / c) % w, ch = q % c;
    float s = 0.0f;
    for (int ky = 0; ky < k; ky++) {
        int o = y + pad - ky;
        if (o < 0 || o % stride != 0 || o / stride >= oh) continue;
        int oy = o / stride;
        for (int kx = 0; kx < k; kx++) {
            int u = x + pad - kx;
            if (u < 0 || u % stride != 0 || u / stride >= ow) continue;
            s = __fadd_rn(s, dcol[(((long)b * oh + oy) * ow + u / stride) * kkc + (ky * k + kx) * c + ch]);
        }
    }
    dx[i] = s;
}

// Batch norm statistics in two passes, in the host's order: bn_stats_part
// gives one thread to each (column, block of per rows) for float64 sums of
// x and x² in row order; bn_stats adds the blocks in order and finishes.
extern "C" __global__ void bn_stats_part(double* part, const float* x, int rows, int cols, int per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int blk = blockIdx.y;
    if (j >= cols) return;
    int lo = blk * per, hi = min(lo + per, rows);
    double s = 0.0, q = 0.0;
    for (int r = lo; r < hi; r++) {
        double v = (double)x[(long)r * cols + j];
        s = __dadd_rn(s, v);
        q = __dadd_rn(q, __dmul_rn(v, v));
    }
    part[2 * ((long)blk * cols + j)] = s;
    part[2 * ((long)blk * cols + j) + 1] = q;
}

extern "C" __global__ void bn_stats(float* mean, float* inv, float* rmean, float* rvar, const double* part, int nb,
                                    int rows, int cols, double momentum, double eps) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double s = 0.0, q = 0.0;
    for (int b = 0; b < nb; b++) {
        s = __dadd_rn(s, part[2 * ((long)b * cols + j)]);
        q = __dadd_rn(q, part[2 * ((long)b * cols + j) + 1]);
    }
    double n = (double)rows;
    double m = __ddiv_rn(s, n);
    double v = fmax(__dsub_rn(__ddiv_rn(q, n), __dmul_rn(m, m)), 0.0);
    mean[j] = (float)m;
    inv[j] = (float)__ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(v, eps)));
    if (rmean == 0) return;
    double u = v;
    if (rows > 1) u = __ddiv_rn(__dmul_rn(v, n), __dsub_rn(n, 1.0));
    double keep = __dsub_rn(1.0, momentum);
    rmean[j] = (float)__dadd_rn(__dmul_rn(keep, (double)rmean[j]), __dmul_rn(momentum, m));
    rvar[j] = (float)__dadd_rn(__dmul_rn(keep, (double)rvar[j]), __dmul_rn(momentum, u));
}

extern "C" __global__ void bn_scale(float* s, const float* g, const float* vr, int cols, double eps) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < cols) s[j] = (float)__ddiv_rn(g == 0 ? 1.0 : (double)g[j], __dsqrt_rn(__dadd_rn((double)vr[j], eps)));
}

extern "C" __global__ void bn_forward(float* y, const float* x, const float* mean, const float* inv, const float* g,
                                      const float* b, int rows, int cols, int relu) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * cols) return;
    int j = (int)(i % cols);
    float h = __fmul_rn(__fsub_rn(x[i], mean[j]), inv[j]);
    float v = __fadd_rn(__fmul_rn(h, g[j]), b[j]);
    if (relu && !(v > 0.0f)) v = 0.0f;
    y[i] = v;
}

// The backward pass: bn_grad_part sums dz and dz·h like bn_stats_part,
// bn_grad_sums adds the blocks and sets k = γ·inv/rows (after the parts in
// the scratch), bn_grad_dx applies them.
extern "C" __global__ void bn_grad_part(double* part, const float* dz, const float* x, const float* mean,
                                        const float* inv, int rows, int cols, int per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int blk = blockIdx.y;
    if (j >= cols) return;
    int lo = blk * per, hi = min(lo + per, rows);
    double sb = 0.0, sg = 0.0;
    float mu = mean[j], iv = inv[j];
    for (int r = lo; r < hi; r++) {
        long i = (long)r * cols + j;
        float h = __fmul_rn(__fsub_rn(x[i], mu), iv);
        double z = (double)dz[i];
        sb = __dadd_rn(sb, z);
        sg = __dadd_rn(sg, __dmul_rn(z, (double)h));
    }
    part[2 * ((long)blk * cols + j)] = sb;
    part[2 * ((long)blk * cols + j) + 1] = sg;
}

extern "C" __global__ void bn_grad_sums(float* dgamma, float* dbeta, float* k, const double* part, const float* g,
                                        const float* inv, int nb, int rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double sb = 0.0, sg = 0.0;
    for (int b = 0; b < nb; b++) {
        sb = __dadd_rn(sb, part[2 * ((long)b * cols + j)]);
        sg = __dadd_rn(sg, part[2 * ((long)b * cols + j) + 1]);
    }
    dbeta[j] = (float)sb;
    dgamma[j] = (float)sg;
    k[j] = (float)__ddiv_rn(__dmul_rn((double)g[j], (double)inv[j]), (double)rows);
}

extern "C" __global__ void bn_grad_dx(float* dx, const float* dz, const float* x, const float* mean, const float* inv,
                                      const float* dgamma, const float* dbeta, const float* k, int rows, int cols, int frozen) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * cols) return;
    int j = (int)(i % cols);
    float h = __fmul_rn(__fsub_rn(x[i], mean[j]), inv[j]);
    float db = frozen ? 0.0f : dbeta[j], dg = frozen ? 0.0f : dgamma[j];
    float t = __fsub_rn(__fmul_rn((float)rows, dz[i]), db);
    t = __fsub_rn(t, __fmul_rn(h, dg));
    dx[i] = __fmul_rn(k[j], t);
}

extern "C" __global__ void add_act(float* y, const float* a, const float* b, int n, int relu) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = __fadd_rn(a[i], b[i]);
    if (relu && !(v > 0.0f)) v = 0.0f;
    y[i] = v;
}

extern "C" __global__ void copy_f(float* dst, const float* src, int n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = src[i];
}

// One thread per (row, channel), positions summed in order.
extern "C" __global__ void gap(float* y, const float* x, int rows, int hw, int c) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * c) return;
    long r = i / c;
    int j = (int)(i % c);
    float s = 0.0f;
    for (int p = 0; p < hw; p++) s = __fadd_rn(s, x[(r * hw + p) * c + j]);
    y[i] = __fdiv_rn(s, (float)hw);
}

extern "C" __global__ void gap_grad(float* dx, const float* dy, int rows, int hw, int c) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * hw * c) return;
    long r = i / ((long)hw * c);
    dx[i] = __fdiv_rn(dy[r * c + i % c], (float)hw);
}

extern "C" __global__ void scale_rows(float* dst, const float* x, const float* s, int rows, int cols) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long)rows * cols) dst[i] = __fmul_rn(x[i], s[i / cols]);
}

extern "C" __global__ void div_cols(float* dst, const float* x, const float* s, int rows, int cols) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * cols) return;
    float d = s[i % cols];
    dst[i] = d == 0.0f ? 0.0f : __fdiv_rn(x[i], d);
}

// Activation quantization: act_minmax gives each block of BLOCK threads a
// strided share of x to take min and max of (with 0; exact in any order),
// act_observe folds the blocks' into the observer and derives scale and
// zero point (kernels.ScaleZero, asymmetric), act_quant applies them.
extern "C" __global__ void act_minmax(float* part, const float* x, int n) {
    __shared__ float lo[BLOCK], hi[BLOCK];
    float l = 0.0f, h = 0.0f;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = x[i];
        if (v < l) l = v;
        if (v > h) h = v;
    }
    lo[threadIdx.x] = l;
    hi[threadIdx.x] = h;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            if (lo[threadIdx.x + k] < lo[threadIdx.x]) lo[threadIdx.x] = lo[threadIdx.x + k];
            if (hi[threadIdx.x + k] > hi[threadIdx.x]) hi[threadIdx.x] = hi[threadIdx.x + k];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        part[2 * blockIdx.x] = lo[0];
        part[2 * blockIdx.x + 1] = hi[0];
    }
}

extern "C" __global__ void act_observe(float* obs, const float* part, int blocks, int observe, float m, int qmin, int qmax) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (observe) {
        float l = 0.0f, h = 0.0f;
        for (int b = 0; b < blocks; b++) {
            if (part[2 * b] < l) l = part[2 * b];
            if (part[2 * b + 1] > h) h = part[2 * b + 1];
        }
        if (obs[2] == 0.0f) {
            obs[0] = l;
            obs[1] = h;
            obs[2] = 1.0f;
        } else {
            float keep = __fsub_rn(1.0f, m);
            obs[0] = __fadd_rn(__fmul_rn(m, obs[0]), __fmul_rn(keep, l));
            obs[1] = __fadd_rn(__fmul_rn(m, obs[1]), __fmul_rn(keep, h));
        }
    }
    float mn = obs[0] < 0.0f ? obs[0] : 0.0f, mx = obs[1] > 0.0f ? obs[1] : 0.0f;
    float scale = __fdiv_rn(__fsub_rn(mx, mn), (float)(qmax - qmin));
    if (!(scale > 0.0f) || isinf(scale)) scale = 1.0f;
    double z = rint(__dsub_rn((double)qmin, __ddiv_rn((double)mn, (double)scale)));
    z = fmin(fmax(z, (double)qmin), (double)qmax);
    obs[3] = scale;
    obs[4] = (float)z;
}

extern "C" __global__ void act_quant(float* y, float* inside, const float* obs, const float* x, int n, int qmin, int qmax) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float sc = obs[3], zf = obs[4], inv = __fdiv_rn(1.0f, sc);
    float q = __fadd_rn(rintf(__fmul_rn(x[i], inv)), zf), ok = 1.0f;
    if (q < (float)qmin) { q = (float)qmin; ok = 0.0f; }
    else if (q > (float)qmax) { q = (float)qmax; ok = 0.0f; }
    y[i] = __fmul_rn(__fsub_rn(q, zf), sc);
    inside[i] = ok;
}

extern "C" __global__ void relu6(float* y, int n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = y[i];
    if (!(v > 0.0f)) v = 0.0f;
    y[i] = v < 6.0f ? v : 6.0f;
}

extern "C" __global__ void relu6_grad(float* dx, const float* dy, const float* y, int n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = y[i];
    dx[i] = (v > 0.0f && v < 6.0f) ? dy[i] : 0.0f;
}

// Depthwise convolution, one thread per output element, taps in order.
extern "C" __global__ void depthwise(float* y, const float* x, const float* wt, int rows, int h, int w, int c, int k,
                                     int stride, int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * oh * ow * c) return;
    int j = (int)(i % c);
    long r = i / c;
    int ox = (int)(r % ow), oy = (int)(r / ow % oh), b = (int)(r / ((long)oh * ow));
    float s = 0.0f;
    for (int ky = 0; ky < k; ky++) {
        int iy = oy * stride - pad + ky;
        for (int kx = 0; kx < k; kx++) {
            int ix = ox * stride - pad + kx;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                s = __fadd_rn(s, __fmul_rn(x[(((long)b * h + iy) * w + ix) * c + j], wt[(j * k + ky) * k + kx]));
        }
    }
    y[i] = s;
}

// Its input gradient, one thread per input element, covering taps in order.
extern "C" __global__ void depthwise_grad_x(float* dx, const float* dy, const float* wt, int rows, int h, int w, int c,
                                            int k, int stride, int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * h * w * c) return;
    int j = (int)(i % c);
    long r = i / c;
    int x = (int)(r % w), y = (int)(r / w % h), b = (int)(r / ((long)h * w));
    float s = 0.0f;
    for (int ky = 0; ky < k; ky++) {
        int o = y + pad - ky;
        if (o < 0 || o % stride != 0 || o / stride >= oh) continue;
        for (int kx = 0; kx < k; kx++) {
            int u = x + pad - kx;
            if (u < 0 || u % stride != 0 || u / stride >= ow) continue;
            s = __fadd_rn(s, __fmul_rn(dy[(((long)b * oh + o / stride) * ow + u / stride) * c + j], wt[(j * k + ky) * k + kx]));
        }
    }
    dx[i] = s;
}

// Its filter gradient's block sums: one thread per (tap of a channel,
// block of per output positions); col_sum adds the blocks in order.
extern "C" __global__ void depthwise_grad_w_part(float* part, const float* dy, const float* x, int rows, int h, int w,
                                                 int c, int k, int stride, int pad, int per) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    int t = blockIdx.x * blockDim.x + threadIdx.x, blk = blockIdx.y;
    if (t >= c * k * k) return;
    int j = t / (k * k), ky = t / k % k, kx = t % k;
    long pos = (long)rows * oh * ow, lo = (long)blk * per, hi = lo + per < pos ? lo + per : pos;
    float s = 0.0f;
    for (long r = lo; r < hi; r++) {
        int ox = (int)(r % ow), oy = (int)(r / ow % oh), b = (int)(r / ((long)oh * ow));
        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
            s = __fadd_rn(s, __fmul_rn(dy[r * c + j], x[(((long)b * h + iy) * w + ix) * c + j]));
    }
    part[(long)blk * c * k * k + t] = s;
}

// Pooling over k×k windows moved by stride, pad around (never a maximum).
extern "C" __global__ void maxpool(float* y, int* arg, const float* x, int rows, int h, int w, int c, int k, int stride,
                                   int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * oh * ow * c) return;
    int ch = (int)(i % c);
    long r = i / c;
    int ox = (int)(r % ow), oy = (int)(r / ow % oh), b = (int)(r / ((long)oh * ow));
    const float* img = x + (long)b * h * w * c;
    int at = -1;
    float best = 0.0f;
    for (int ky = 0; ky < k; ky++) {
        int iy = oy * stride - pad + ky;
        if (iy < 0 || iy >= h) continue;
        for (int kx = 0; kx < k; kx++) {
            int ix = ox * stride - pad + kx;
            if (ix < 0 || ix >= w) continue;
            int off = (iy * w + ix) * c + ch;
            if (at < 0 || img[off] > best) { best = img[off]; at = off; }
        }
    }
    y[i] = best;
    arg[i] = at;
}

// The first and last output rows (or columns) whose window covers input
// position p.
__device__ int first_window(int p, int k, int stride, int pad) {
    int a = p + pad - k + 1;
    return a <= 0 ? 0 : (a + stride - 1) / stride;
}

// One thread per input element: the windows covering it in output order.
extern "C" __global__ void maxpool_grad(float* dx, const float* dy, const int* arg, int rows, int h, int w, int c, int k,
                                        int stride, int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * h * w * c) return;
    int ch = (int)(i % c);
    long r = i / c;
    int x = (int)(r % w), y = (int)(r / w % h), b = (int)(r / ((long)h * w));
    int off = (y * w + x) * c + ch;
    long base = (long)b * oh * ow * c;
    float s = 0.0f;
    for (int oy = first_window(y, k, stride, pad); oy < oh && oy * stride - pad <= y; oy++) {
        for (int ox = first_window(x, k, stride, pad); ox < ow && ox * stride - pad <= x; ox++) {
            long o = base + ((long)oy * ow + ox) * c + ch;
            if (arg[o] == off) s = __fadd_rn(s, dy[o]);
        }
    }
    dx[i] = s;
}

extern "C" __global__ void avgpool(float* y, const float* x, int rows, int h, int w, int c, int k, int stride, int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * oh * ow * c) return;
    int ch = (int)(i % c);
    long r = i / c;
    int ox = (int)(r % ow), oy = (int)(r / ow % oh), b = (int)(r / ((long)oh * ow));
    float s = 0.0f;
    for (int ky = 0; ky < k; ky++) {
        int iy = oy * stride - pad + ky;
        if (iy < 0 || iy >= h) continue;
        for (int kx = 0; kx < k; kx++) {
            int ix = ox * stride - pad + kx;
            if (ix >= 0 && ix < w) s = __fadd_rn(s, x[(((long)b * h + iy) * w + ix) * c + ch]);
        }
    }
    y[i] = __fdiv_rn(s, (float)(k * k));
}

extern "C" __global__ void avgpool_grad(float* dx, const float* dy, int rows, int h, int w, int c, int k, int stride,
                                        int pad) {
    int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * h * w * c) return;
    int ch = (int)(i % c);
    long r = i / c;
    int x = (int)(r % w), y = (int)(r / w % h), b = (int)(r / ((long)h * w));
    float div = (float)(k * k), s = 0.0f;
    for (int oy = first_window(y, k, stride, pad); oy < oh && oy * stride - pad <= y; oy++)
        for (int ox = first_window(x, k, stride, pad); ox < ow && ox * stride - pad <= x; ox++)
            s = __fadd_rn(s, __fdiv_rn(dy[(((long)b * oh + oy) * ow + ox) * c + ch], div));
    dx[i] = s;
}
