/* Fused CPU kernels for the PSN family: psn_zoo/neurons/_native.py compiles this file on first use and calls it
 * through ctypes. Tensors are float32, row-major, time-first: x, s, grad: [T, N]; W: [T, T].
 *
 * S = Θ(W·x + b). W may be banded: only columns t − lo … t + hi of row t are used, the rest is read as zero (dense:
 * lo = hi = T − 1; the masked PSN at λ = 1 and the sliding PSN's Toeplitz matrix: lo = k − 1, hi = 0). Skipping the
 * zeros changes no bit of a finite result: an fma with a zero product returns its addend.
 *
 * One pass over the columns does what the PyTorch path does in eight: every block of BLK columns is loaded once,
 * the membrane, threshold, surrogate and the three gradients are computed while it sits in L1, and only the outputs
 * are written back. The membrane's threshold (forward) and surrogate (backward) are applied to each register block
 * as it is finished, before it is ever stored, and W is packed once per call so the inner loop has no branch.
 *
 * The arithmetic is fixed, so every CPU, build and thread count gives the same bits (docs/numerics.md); it follows
 * SpikingJelly 2.0.0's operations one by one:
 *   - the membrane W·x is a fused multiply-add chain over k in ascending order, starting from 0 (the order of MKL's
 *     GEMM kernels on Intel CPUs; MKL on other CPUs, and other BLAS, may sum otherwise: then SJ's spikes differ
 *     from ours only where W·x + b lies within float32 round-off of 0);
 *   - SJ's h = addmm(b, W, x) adds the bias after the product, so h = fl(W·x + b) and Θ(h) = [W·x ≥ −b];
 *   - SJ's ATan backward: u = fl(c·h), fl(u·u), fl(1 + ·), reciprocal, · a, · grad  (c = float32(π·a), a = α/2);
 *   - grad_x = Wᵀ·grad_h with the same ascending chain (torch.mm(W.t(), grad_h) on Intel's MKL).
 * grad_W and grad_b are sums over N in another order than MKL's: equal to float round-off, as any blocked GEMM.
 * grad_W is zero outside the band (the gradient of W masked to the band).
 *
 * Build: cc -O3 -march=native -ffp-contract=off -fopenmp -fPIC -shared (contraction off: every fma is explicit).
 */
#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h> /* explicit registers for the hot loops; the portable loops below compute the same values */
#endif
#include <stdlib.h>
#include <string.h>

#define ABI_VERSION 7
#define BLK 64          /* columns per block: 4 AVX-512 vectors; a [32, 64] float block is 8 KiB */
#define SPAN (4 * BLK)  /* columns per backward step: the grad_W tiles amortise their partial sums over it */
#define LANES 16        /* partial sums per (t, k) of grad_W and per t of grad_b */
#define GROUPS 64       /* the backward's parameter-gradient partial sums: one per group of spans, at most GROUPS, */
#define GROUP_SPANS 16  /* each of at least GROUP_SPANS spans (a group's lane reduction costs a fraction of one) */
#define RB 4            /* rows per register block */
_Static_assert(RB == 4, "the tile switches in mat_block and outer_block list the sizes 1..4");

int psn_abi_version(void) { return ABI_VERSION; }

/* 512 where the explicit AVX-512 register code is compiled in, else 0 (the portable loops; same results). */
int psn_vector_bits(void) {
#if defined(__AVX512F__)
    return 512;
#else
    return 0;
#endif
}

static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int imin(int a, int b) { return a < b ? a : b; }


/* A [T, T] matrix, A[r, k] = data[r·rs + k·cs] (W: rs = T, cs = 1; Wᵀ read out of W: rs = 1, cs = T), used inside
 * its band k ∈ [r − lo, r + hi] only: entries outside it count as zero, whatever they hold. The full row blocks are
 * packed: P[(rb·T + k)·RB + i] = A[rb·RB + i, k] inside the band, else 0 (rows past T too: the last block is
 * padded), so the hot loop broadcasts RB consecutive floats per k without a branch, for every T. */
typedef struct {
    const float *data;
    int rs, cs;
    float *P;
    int T, lo, hi;
} Matrix;

static inline float band_entry(const Matrix *m, int r, int k) {
    return k >= r - m->lo && k <= r + m->hi ? m->data[r * m->rs + k * m->cs] : 0.f;
}

static Matrix make_matrix(const float *data, int T, int lo, int hi, int transposed) {
    const int padded = (T + RB - 1) / RB * RB; /* the last row block is padded with zero rows */
    Matrix m = {data, transposed ? 1 : T, transposed ? T : 1, malloc(sizeof(float) * padded * T), T, lo, hi};
    for (int r = 0; r < padded; r += RB)
        for (int k = 0; k < T; ++k)
            for (int i = 0; i < RB; ++i) m.P[(r * T / RB + k) * RB + i] = r + i < T ? band_entry(&m, r + i, k) : 0.f;
    return m;
}

/* What mat_block does with each finished membrane row block, while it is still in registers. */
typedef struct {
    enum { STORE, THRESHOLD, SURROGATE } kind;
    float *out;            /* STORE: the membrane; THRESHOLD: the spikes; SURROGATE: grad_h */
    int64_t ldo;
    float *keep;           /* THRESHOLD: also store the membrane here (NULL: don't), leading dimension ldo */
    const float *bias;     /* THRESHOLD: −b (spike where membrane ≥ −b); SURROGATE: b */
    const float *grad;     /* SURROGATE: the incoming gradient, leading dimension ldg */
    int64_t ldg;
    float a, c;            /* SURROGATE: SJ's ATan constants */
    float *lanes;          /* SURROGATE: grad_b's partial sums, LANES per row */
} Epilogue;

/* SJ's ATan backward, one rounding per operation: a / (1 + (c·(h + b))²) · g. */
static inline float atan_grad(float h, float b, float g, float a, float c) {
    float u = c * (h + b);
    u = u * u;
    u = 1.f + u;
    u = 1.f / u;
    u = u * a;
    return u * g;
}

/* Row t, columns [j, j + width) of a finished membrane block: apply the epilogue (portable form). */
static inline void finish_row(const Epilogue *e, int t, int64_t j, const float *h, int width) {
    switch (e->kind) {
    case STORE: memcpy(e->out + t * e->ldo + j, h, width * sizeof(float)); break;
    case THRESHOLD:
        for (int l = 0; l < width; ++l) e->out[t * e->ldo + j + l] = h[l] >= e->bias[t] ? 1.f : 0.f;
        if (e->keep) memcpy(e->keep + t * e->ldo + j, h, width * sizeof(float));
        break;
    case SURROGATE:
        for (int l = 0; l < width; ++l) {
            const float gh = atan_grad(h[l], e->bias[t], e->grad[t * e->ldg + j + l], e->a, e->c);
            e->out[t * e->ldo + j + l] = gh;
            e->lanes[t * LANES + (j + l) % LANES] += gh;
        }
        break;
    }
}

#if defined(__AVX512F__) && BLK == 64 && LANES == 16
/* acc[i] += Σ_k P[k·RB + i]·in[k, 0:BLK] for the first R rows of a packed row block, k = k0 … k1 in ascending order
 * (R a constant at every call site, so the accumulators stay in registers). */
static inline __attribute__((always_inline)) void accumulate(__m512 acc[RB][4], const float *restrict P,
                                                             const float *restrict in, int64_t ldi, int k0, int k1,
                                                             const int R) {
    for (int k = k0; k <= k1; ++k) {
        const float *ik = in + k * ldi;
        const __m512 v0 = _mm512_loadu_ps(ik), v1 = _mm512_loadu_ps(ik + 16);
        const __m512 v2 = _mm512_loadu_ps(ik + 32), v3 = _mm512_loadu_ps(ik + 48);
        for (int i = 0; i < R; ++i) {
            const __m512 a = _mm512_set1_ps(P[k * RB + i]);
            acc[i][0] = _mm512_fmadd_ps(a, v0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(a, v1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(a, v2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(a, v3, acc[i][3]);
        }
    }
}
#endif

/* For r < T and the BLK columns starting at column j of the epilogue's tensors: h[r, :] = Σ_k A[r, k]·in[k, :] over
 * the band k ∈ [r − lo, r + hi] (ascending-k fma chains from 0, RB rows at a time; a row block runs over the union of
 * its rows' bands, adding exact zeros; the last block computes only the rows it has), then the epilogue on h. */
static void mat_block(const Matrix *m, const float *restrict in, int64_t ldi, const Epilogue *e, int64_t j) {
    const int T = m->T, lo = m->lo, hi = m->hi;
    for (int r = 0; r < T; r += RB) {
        const int rows = imin(RB, T - r); /* RB, or fewer in the last block */
        const int k0 = imax(0, r - lo), k1 = imin(T - 1, r + rows - 1 + hi);
        const float *restrict P = m->P + r * T;
#if defined(__AVX512F__) && BLK == 64 && LANES == 16
        __m512 acc[RB][4];
        for (int i = 0; i < RB; ++i)
            for (int q = 0; q < 4; ++q) acc[i][q] = _mm512_setzero_ps();
        switch (rows) { /* the last block computes only the rows it has (no padding rows) */
        case 1: accumulate(acc, P, in, ldi, k0, k1, 1); break;
        case 2: accumulate(acc, P, in, ldi, k0, k1, 2); break;
        case 3: accumulate(acc, P, in, ldi, k0, k1, 3); break;
        default: accumulate(acc, P, in, ldi, k0, k1, RB);
        }
#pragma GCC unroll 4 /* unrolled, the accumulators stay in registers (rolled, gcc spilled all 16 to the stack) */
        for (int i = 0; i < RB; ++i) {
            if (i >= rows) break;
            const int t = r + i;
            float *dst = e->out + t * e->ldo + j;
            if (e->kind == STORE) {
                for (int q = 0; q < 4; ++q) _mm512_storeu_ps(dst + 16 * q, acc[i][q]);
            } else if (e->kind == THRESHOLD) {
                const __m512 thr = _mm512_set1_ps(e->bias[t]), one = _mm512_set1_ps(1.f);
                for (int q = 0; q < 4; ++q)
                    _mm512_storeu_ps(dst + 16 * q, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(acc[i][q], thr, _CMP_GE_OQ), one));
                if (e->keep)
                    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(e->keep + t * e->ldo + j + 16 * q, acc[i][q]);
            } else {
                const __m512 bt = _mm512_set1_ps(e->bias[t]), a = _mm512_set1_ps(e->a), c = _mm512_set1_ps(e->c);
                const __m512 one = _mm512_set1_ps(1.f);
                const float *g = e->grad + t * e->ldg + j;
                __m512 lanes = _mm512_loadu_ps(e->lanes + t * LANES);
                for (int q = 0; q < 4; ++q) {
                    __m512 u = _mm512_mul_ps(c, _mm512_add_ps(acc[i][q], bt));
                    u = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(u, u)));
                    const __m512 gh = _mm512_mul_ps(_mm512_mul_ps(u, a), _mm512_loadu_ps(g + 16 * q));
                    _mm512_storeu_ps(dst + 16 * q, gh);
                    lanes = _mm512_add_ps(lanes, gh);
                }
                _mm512_storeu_ps(e->lanes + t * LANES, lanes);
            }
        }
#else
        float acc[RB][BLK];
        for (int i = 0; i < RB; ++i)
            for (int l = 0; l < BLK; ++l) acc[i][l] = 0.f;
        for (int k = k0; k <= k1; ++k) {
            const float *ik = in + k * ldi;
            for (int l = 0; l < BLK; ++l)
                for (int i = 0; i < RB; ++i) acc[i][l] = fmaf(P[k * RB + i], ik[l], acc[i][l]);
        }
        for (int i = 0; i < rows; ++i) finish_row(e, r + i, j, acc[i], BLK);
#endif
    }
}

/* One register tile of grad_W: lw[t + i, k + m, :] += Σ_j grad_h[t + i, j]·in[k + m, j] over SPAN columns for
 * i < RT, m < RK (RT, RK ≤ RB, constants at every call site, so the accumulators stay in registers), kept lane-wise:
 * LANES partial sums per (t, k), each an fma chain over j in ascending order from 0, then added to lw. */
static inline __attribute__((always_inline)) void outer_tile(const float *restrict gh, const float *restrict in,
                                                             int64_t ld, int T, int t, int k, const int RT,
                                                             const int RK, float *restrict lw) {
#if defined(__AVX512F__) && LANES == 16
    __m512 acc[RB][RB];
    for (int i = 0; i < RT; ++i)
        for (int m = 0; m < RK; ++m) acc[i][m] = _mm512_setzero_ps();
    for (int64_t j = 0; j < SPAN; j += LANES) {
        __m512 g[RB], v[RB];
        for (int i = 0; i < RT; ++i) g[i] = _mm512_loadu_ps(gh + (t + i) * SPAN + j);
        for (int m = 0; m < RK; ++m) v[m] = _mm512_loadu_ps(in + (k + m) * ld + j);
        for (int i = 0; i < RT; ++i)
            for (int m = 0; m < RK; ++m) acc[i][m] = _mm512_fmadd_ps(g[i], v[m], acc[i][m]);
    }
    for (int i = 0; i < RT; ++i)
        for (int m = 0; m < RK; ++m) {
            float *dst = lw + ((t + i) * T + k + m) * LANES;
            _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[i][m]));
        }
#else
    float acc[RB][RB][LANES];
    memset(acc, 0, sizeof(acc));
    for (int64_t j = 0; j < SPAN; j += LANES)
        for (int i = 0; i < RT; ++i)
            for (int m = 0; m < RK; ++m)
                for (int l = 0; l < LANES; ++l)
                    acc[i][m][l] = fmaf(gh[(t + i) * SPAN + j + l], in[(k + m) * ld + j + l], acc[i][m][l]);
    for (int i = 0; i < RT; ++i)
        for (int m = 0; m < RK; ++m)
            for (int l = 0; l < LANES; ++l) lw[((t + i) * T + k + m) * LANES + l] += acc[i][m][l];
#endif
}

/* lw[t, k, :] += Σ_j grad_h[t, j]·in[k, j] over SPAN columns for k in the band of row t, kept lane-wise (LANES
 * partial sums per (t, k)); register tiles of up to RB × RB where a tile meets the band, the last row and column
 * blocks as narrow as T leaves them (every (t, k) takes the same arithmetic, whatever T % RB is). */
static void outer_block(const float *restrict gh, const float *restrict in, int64_t ld, int T, int lo, int hi,
                        float *restrict lw) {
    for (int t = 0; t < T; t += RB) {
        const int rt = imin(RB, T - t);
        for (int k = 0; k < T; k += RB) {
            const int rk = imin(RB, T - k);
            if (k > t + rt - 1 + hi || k + rk - 1 < t - lo) continue; /* the tile is outside the band */
            switch (rt * 8 + rk) {
#define TILE(a, b) \
    case (a) * 8 + (b): outer_tile(gh, in, ld, T, t, k, a, b, lw); break;
                TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(1, 4) TILE(2, 1) TILE(2, 2) TILE(2, 3) TILE(2, 4)
                TILE(3, 1) TILE(3, 2) TILE(3, 3) TILE(3, 4) TILE(4, 1) TILE(4, 2) TILE(4, 3) TILE(4, 4)
#undef TILE
            }
        }
    }
}

/* The SURROGATE epilogue on a stored membrane h: [T, SPAN] (leading dimension ldh), column blocks of BLK in
 * ascending order, exactly as mat_block applies it to the same values in its registers (same operations, same
 * lane order of grad_b's partial sums), so a backward from a stored membrane gives the bits of one that
 * recomputes it. */
static void surrogate_span(const float *restrict h, int64_t ldh, int T, const Epilogue *e) {
    for (int64_t j = 0; j < SPAN; j += BLK)
        for (int t = 0; t < T; ++t) {
#if defined(__AVX512F__) && BLK == 64 && LANES == 16
            const __m512 bt = _mm512_set1_ps(e->bias[t]), a = _mm512_set1_ps(e->a), c = _mm512_set1_ps(e->c);
            const __m512 one = _mm512_set1_ps(1.f);
            const float *g = e->grad + t * e->ldg + j, *ht = h + t * ldh + j;
            float *dst = e->out + t * e->ldo + j;
            __m512 lanes = _mm512_loadu_ps(e->lanes + t * LANES);
            for (int q = 0; q < 4; ++q) {
                __m512 u = _mm512_mul_ps(c, _mm512_add_ps(_mm512_loadu_ps(ht + 16 * q), bt));
                u = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(u, u)));
                const __m512 gh = _mm512_mul_ps(_mm512_mul_ps(u, a), _mm512_loadu_ps(g + 16 * q));
                _mm512_storeu_ps(dst + 16 * q, gh);
                lanes = _mm512_add_ps(lanes, gh);
            }
            _mm512_storeu_ps(e->lanes + t * LANES, lanes);
#else
            finish_row(e, t, j, h + t * ldh + j, BLK);
#endif
        }
}

/* dst[t, 0:width] = src[t, j0 : j0 + n], zero-padded (the last, partial block). */
static void load_block(const float *src, int T, int64_t N, int64_t j0, int64_t n, int64_t width, float *dst) {
    for (int t = 0; t < T; ++t) {
        memcpy(dst + t * width, src + t * N + j0, n * sizeof(float));
        memset(dst + t * width + n, 0, (width - n) * sizeof(float));
    }
}

/* Forward: s = Θ(W·x + b) = [W·x ≥ −b] (1.0 / 0.0); membrane (optional) = W·x without the bias. */
void psn_forward(const float *W, int lo, int hi, const float *bias, const float *x, float *s, float *membrane, int T,
                 int64_t N, int threads) {
    const int64_t blocks = (N + BLK - 1) / BLK;
    const Matrix w = make_matrix(W, T, lo, hi, 0);
    float *neg_bias = malloc(sizeof(float) * T); /* Θ(W·x + b) = [W·x ≥ −b]: negation is exact */
    for (int t = 0; t < T; ++t) neg_bias[t] = -bias[t];
    /* A row stride that is a multiple of 4 KiB puts the rows of a column block into the same L1 sets (8 ways): when
     * a row block reads many of them, every row block re-reads them from further out, so the block is copied
     * contiguous first. Measured (AMD EPYC, N = 2^16, A/B in one process): dense forward 0.66-0.88x the time at
     * T = 22-32, no steady gain at T <= 20 or with a short band, slower where the stride does not alias. */
    const int aliased = imin(T, lo + hi + RB) > 20 && (N * (int64_t)sizeof(float)) % 4096 == 0;
#pragma omp parallel num_threads(threads)
    {
        float *h = malloc(sizeof(float) * T * BLK * 2), *xb = h + T * BLK;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t j0 = b * BLK, n = N - j0 < BLK ? N - j0 : BLK;
            if (n == BLK) { /* the common case: threshold (and keep the membrane) straight from the registers */
                const Epilogue spikes = {.kind = THRESHOLD, .out = s, .ldo = N, .keep = membrane, .bias = neg_bias};
                if (aliased) {
                    load_block(x, T, N, j0, BLK, BLK, xb);
                    mat_block(&w, xb, BLK, &spikes, j0);
                } else {
                    mat_block(&w, x + j0, N, &spikes, j0);
                }
                continue;
            }
            const Epilogue keep = {.kind = STORE, .out = h, .ldo = BLK};
            if (n < BLK) {
                load_block(x, T, N, j0, n, BLK, xb);
                mat_block(&w, xb, BLK, &keep, 0);
            } else {
                mat_block(&w, x + j0, N, &keep, 0);
            }
            for (int t = 0; t < T; ++t) {
                const float thr = neg_bias[t];
                const float *ht = h + t * BLK;
                float *st = s + t * N + j0;
                for (int64_t j = 0; j < n; ++j) st[j] = ht[j] >= thr ? 1.f : 0.f;
                if (membrane) memcpy(membrane + t * N + j0, ht, n * sizeof(float));
            }
        }
        free(h);
    }
    free(w.P);
    free(neg_bias);
}

/* The sum of LANES partial sums by a fixed pairwise tree (the same IEEE additions on every build; a few vector
 * instructions where a sequential chain of LANES dependent additions would dominate a group's cost), leaving them
 * zero for the next group. */
static inline float take_lanes(float *v) {
    _Static_assert(LANES == 16, "take_lanes' tree has four levels");
    float s[8];
    for (int i = 0; i < 8; ++i) s[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; ++i) s[i] = s[i] + s[i + 4];
    for (int i = 0; i < 2; ++i) s[i] = s[i] + s[i + 2];
    memset(v, 0, sizeof(float) * LANES);
    return s[0] + s[1];
}

/* Backward through the ATan surrogate, a = α/2 and c = π·a as float32 (SJ's constants); Wᵀ is read out of W.
 * membrane: the forward's stored W·x ([T, N], psn_forward's membrane output), or NULL: then it is recomputed from x
 * (one GEMM more, no [T, N] kept between the passes); the bits are the same either way. Any output pointer may be
 * NULL (that gradient is not needed). */
void psn_backward(const float *W, int lo, int hi, const float *bias, const float *x, const float *membrane,
                  const float *grad, float *grad_x, float *grad_w, float *grad_b, int T, int64_t N, float a, float c,
                  int threads) {
    const int64_t spans = (N + SPAN - 1) / SPAN;
    if (grad_w) memset(grad_w, 0, sizeof(float) * T * T);
    if (grad_b) memset(grad_b, 0, sizeof(float) * T);
    if (threads < 1) threads = 1;
    /* The columns are split into a fixed number of groups of spans, whatever the thread count: each group's sums of
     * grad_W and grad_b go to its own slot, and the slots are added in group order after the parallel region, so
     * every thread count (and schedule) gives the same bits. */
    const int64_t fit = spans / GROUP_SPANS, groups = fit < 1 ? 1 : fit < GROUPS ? fit : GROUPS;
    float *part_w = calloc((size_t)groups * T * T, sizeof(float)), *part_b = calloc((size_t)groups * T, sizeof(float));
    const Matrix w = make_matrix(W, T, lo, hi, 0), wt = make_matrix(W, T, hi, lo, 1); /* Wᵀ's band: lo, hi swap */
#pragma omp parallel num_threads(threads)
    {
        /* [T, SPAN] each: membrane, grad_h, padded x, grad, padded stored membrane */
        float *buf = malloc(sizeof(float) * T * SPAN * 5);
        float *h = buf, *gh = buf + T * SPAN, *xb = buf + 2 * T * SPAN, *gb = buf + 3 * T * SPAN;
        float *mb = buf + 4 * T * SPAN;
        /* lane-wise partial sums of the current group, zeroed here and by each group's reduction as it reads them */
        float *lw = grad_w ? calloc((size_t)T * T * LANES, sizeof(float)) : NULL;
        float *lb = calloc((size_t)T * LANES, sizeof(float));
#pragma omp for schedule(static)
        for (int64_t group = 0; group < groups; ++group) {
            for (int64_t b = group * spans / groups; b < (group + 1) * spans / groups; ++b) {
                const int64_t j0 = b * SPAN, n = N - j0 < SPAN ? N - j0 : SPAN;
                const float *in = x + j0, *g = grad + j0, *m = membrane ? membrane + j0 : NULL;
                int64_t ld = N;
                if (n < SPAN) {
                    load_block(x, T, N, j0, n, SPAN, xb);
                    load_block(grad, T, N, j0, n, SPAN, gb);
                    if (membrane) load_block(membrane, T, N, j0, n, SPAN, mb); /* zero padding: W·0 = 0, as recomputed */
                    in = xb;
                    g = gb;
                    m = membrane ? mb : NULL;
                    ld = SPAN;
                }
                const Epilogue surrogate = {.kind = SURROGATE, .out = gh, .ldo = SPAN, .bias = bias, .grad = g, .ldg = ld,
                                            .a = a, .c = c, .lanes = lb};
                if (m)
                    surrogate_span(m, ld, T, &surrogate);
                else
                    for (int64_t q = 0; q < SPAN; q += BLK) mat_block(&w, in + q, ld, &surrogate, q);
                if (grad_x) {
                    const Epilogue direct = {.kind = STORE, .out = grad_x + j0, .ldo = N};
                    const Epilogue padded = {.kind = STORE, .out = h, .ldo = SPAN};
                    for (int64_t q = 0; q < SPAN; q += BLK) mat_block(&wt, gh + q, SPAN, n == SPAN ? &direct : &padded, q);
                    if (n < SPAN)
                        for (int t = 0; t < T; ++t) memcpy(grad_x + t * N + j0, h + t * SPAN, n * sizeof(float));
                }
                if (lw) outer_block(gh, in, ld, T, lo, hi, lw);
            }
            if (grad_w)
                for (int t = 0; t < T; ++t)
                    for (int k = imax(0, t - lo); k <= imin(T - 1, t + hi); ++k)
                        part_w[(size_t)group * T * T + t * T + k] = take_lanes(lw + (t * T + k) * LANES);
            for (int i = 0; i < T; ++i) part_b[(size_t)group * T + i] = take_lanes(lb + i * LANES);
        }
        free(lw);
        free(lb);
        free(buf);
    }
    for (int64_t p = 0; p < groups; ++p) {
        if (grad_w)
            for (int i = 0; i < T * T; ++i) grad_w[i] += part_w[(size_t)p * T * T + i];
        if (grad_b)
            for (int i = 0; i < T; ++i) grad_b[i] += part_b[(size_t)p * T + i];
    }
    free(part_w);
    free(part_b);
    free(w.P);
    free(wt.P);
}

/* The sliding PSN: W is the banded Toeplitz matrix of its k taps, W[t, j] = taps[k − 1 − (t − j)] for
 * 0 ≤ t − j < k (else 0), and its bias is one scalar for every t. Built here per call (T² floats) so the caller
 * passes the taps as they are. */
static float *toeplitz(const float *taps, int k, int T) {
    float *W = calloc((size_t)T * T, sizeof(float));
    for (int t = 0; t < T; ++t)
        for (int j = imax(0, t - k + 1); j <= t; ++j) W[t * T + j] = taps[k - 1 - (t - j)];
    return W;
}

static float *repeated(float value, int T) {
    float *v = malloc(sizeof(float) * T);
    for (int t = 0; t < T; ++t) v[t] = value;
    return v;
}

void psn_forward_sliding(const float *taps, int k, const float *bias, const float *x, float *s, int T, int64_t N,
                         int threads) {
    float *W = toeplitz(taps, k, T), *b = repeated(*bias, T);
    psn_forward(W, k - 1, 0, b, x, s, NULL, T, N, threads);
    free(W);
    free(b);
}

/* grad_taps[i] sums grad_W over the i-th diagonal of the band, rows in ascending order; grad_bias sums grad_b over
 * t in ascending order. Any output pointer may be NULL. */
void psn_backward_sliding(const float *taps, int k, const float *bias, const float *x, const float *grad,
                          float *grad_x, float *grad_taps, float *grad_bias, int T, int64_t N, float a, float c,
                          int threads) {
    float *W = toeplitz(taps, k, T), *b = repeated(*bias, T);
    float *gw = grad_taps ? malloc(sizeof(float) * T * T) : NULL, *gb = grad_bias ? malloc(sizeof(float) * T) : NULL;
    psn_backward(W, k - 1, 0, b, x, NULL, grad, grad_x, gw, gb, T, N, a, c, threads);
    if (grad_taps) {
        for (int i = 0; i < k; ++i) grad_taps[i] = 0.f;
        for (int t = 0; t < T; ++t)
            for (int j = imax(0, t - k + 1); j <= t; ++j) grad_taps[k - 1 - (t - j)] += gw[t * T + j];
    }
    if (grad_bias) {
        float sum = 0.f;
        for (int t = 0; t < T; ++t) sum += gb[t];
        *grad_bias = sum;
    }
    free(W);
    free(b);
    free(gw);
    free(gb);
}
