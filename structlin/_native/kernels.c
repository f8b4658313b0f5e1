/*
 * kernels.c -- native CPU kernels for structlin.
 *
 *   - O(N) passes of the DCT-II / DCT-III computed with one real FFT
 *     (Makhoul 1980); torch.fft.rfft / irfft do the FFT itself.
 *   - In-place fast Walsh-Hadamard transform (natural / Sylvester order).
 *
 * Plain C99 + GCC/Clang vector extensions; no Python or torch headers.
 * Build: cc -O3 -march=native -fPIC -shared -pthread [-fopenmp] kernels.c
 * (also correct with plain -O2 on any x86-64 / aarch64 gcc or clang).
 * Threads: OpenMP when built with -fopenmp, else pthreads (see Fork-join);
 * every kernel takes `nthreads`, the most threads it may use.
 *
 * Layout: every array is contiguous row-major, `rows` rows of length n.
 * m = n/2 + 1 is the number of rfft bins; complex arrays are interleaved
 * (re, im) with shape (rows, m, 2).  Outputs must not alias inputs
 * (except sl_fwht_*, which works in place).
 *
 * The type-generic part (between SL_GENERIC markers) is compiled twice, for
 * float (_f32) and double (_f64), by including this file into itself; keep
 * the file name "kernels.c".
 */
#ifndef SL_GENERIC

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define SL_ABI_VERSION 5

/* ---------------------------------------------------------------------- */
/* Tunables                                                                */

/* FWHT rows up to this many bytes are transformed entirely in L1. */
#ifndef SL_FWHT_L1_BYTES
#define SL_FWHT_L1_BYTES 16384
#endif
/* Largest radix of the passes above the L1 chunk (see fwht_long). */
#ifndef SL_FWHT_TOP_RMAX
#define SL_FWHT_TOP_RMAX 8
#endif

/* Use FMA for some butterfly differences (see bfly). */
#ifndef SL_FMA_SUB
#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
#define SL_FMA_SUB 1
#else
#define SL_FMA_SUB 0
#endif
#endif

/* Butterfly strides (bit mask, in vectors) whose differences use the FMA
 * pipes, in the first pass (which also runs the lane-stage FMAs) and in the
 * later passes; measured on Zen 4. */
#ifndef SL_FMASK0
#define SL_FMASK0 10
#endif
#ifndef SL_FMASK1
#define SL_FMASK1 6
#endif

/* Vector width in bytes used by the FWHT. */
#ifndef SL_VBYTES
#if defined(__AVX512F__)
#define SL_VBYTES 64
#elif defined(__AVX__)
#define SL_VBYTES 32
#else
#define SL_VBYTES 16
#endif
#endif

/* Largest radix of one in-register pass (16 needs ~32 vector registers). */
#ifndef SL_RMAX
#if SL_VBYTES >= 64 || defined(__aarch64__)
#define SL_RMAX 16
#else
#define SL_RMAX 8
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SL_INLINE static inline __attribute__((always_inline))
#define SL_NOINLINE static __attribute__((noinline))
#define SL_EXPORT __attribute__((visibility("default")))
#else
#error "kernels.c needs GCC or Clang (vector extensions)"
#endif

#if defined(__clang__)
#define SL_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define SL_IVDEP _Pragma("GCC ivdep")
#endif

/* M(0) M(1) ... M(15): straight-line code over a register block, so that
 * every index is a constant and the block lives in registers (with loops,
 * clang keeps the array on the stack). */
#define SL_FOR16(M) \
    M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)

/* ---------------------------------------------------------------------- */
/* Vector types                                                            */

typedef float sl_vf __attribute__((vector_size(SL_VBYTES)));
typedef double sl_vd __attribute__((vector_size(SL_VBYTES)));
typedef int32_t sl_vfi __attribute__((vector_size(SL_VBYTES)));
typedef int64_t sl_vdi __attribute__((vector_size(SL_VBYTES)));
/* unaligned, aliasing-safe views for loads/stores */
typedef float sl_vf_u __attribute__((vector_size(SL_VBYTES), aligned(4), may_alias));
typedef double sl_vd_u __attribute__((vector_size(SL_VBYTES), aligned(8), may_alias));

#define SL_WF (SL_VBYTES / 4)
#define SL_WD (SL_VBYTES / 8)

/* Lane lists: F(lane, h) for each lane of a 2/4/8/16-lane vector. */
#define SL_L2(F, h) F(0, h), F(1, h)
#define SL_L4(F, h) SL_L2(F, h), F(2, h), F(3, h)
#define SL_L8(F, h) SL_L4(F, h), F(4, h), F(5, h), F(6, h), F(7, h)
#define SL_L16(F, h) \
    SL_L8(F, h), F(8, h), F(9, h), F(10, h), F(11, h), F(12, h), F(13, h), F(14, h), F(15, h)
#if SL_VBYTES == 64
#define SL_LF SL_L16
#define SL_LD SL_L8
#elif SL_VBYTES == 32
#define SL_LF SL_L8
#define SL_LD SL_L4
#elif SL_VBYTES == 16
#define SL_LF SL_L4
#define SL_LD SL_L2
#else
#error "SL_VBYTES must be 16, 32 or 64"
#endif

/* Lane permutation i -> i^h (index kept in range for unused h >= W). */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SL_PERM(v, vi, idx) __builtin_shufflevector(v, v, idx)
#else
#define SL_PERM(v, vi, idx) __builtin_shuffle(v, (vi){idx})
#endif

/* ---------------------------------------------------------------------- */
/* Fork-join                                                               */
/*                                                                          */
/* Built with -fopenmp, kernels run on an OpenMP team.  Loaded into a torch */
/* process this is torch's own libgomp (same soname), so the worker threads */
/* are the ones torch keeps spinning between ops: a fork-join costs ~1 us.  */
/* Without OpenMP, helper pthreads are started per call; they claim work    */
/* dynamically and the caller never waits for a helper that has not started */
/* (thread wake-up can take ~50 us on a VM, and the cores may be held by     */
/* torch's spinning OpenMP threads).                                        */

typedef void (*sl_task_fn)(void *ctx, int64_t i0, int64_t i1);

#ifdef _OPENMP
#include <omp.h>
#define SL_BACKEND 1
#ifndef SL_PAR_MIN_ELEMS /* smaller tensors run on the calling thread */
#define SL_PAR_MIN_ELEMS (1 << 15)
#endif

/* Run fn over [0, items) split into nt contiguous ranges. */
static void sl_parallel(sl_task_fn fn, void *ctx, int64_t items, int nt) {
    if (nt <= 1 || items <= 1) {
        if (items > 0) fn(ctx, 0, items);
        return;
    }
    if (nt > items) nt = (int)items;
#pragma omp parallel num_threads(nt)
    {
        int64_t t = omp_get_thread_num(), k = omp_get_num_threads();
        fn(ctx, items * t / k, items * (t + 1) / k);
    }
}

#else /* pthreads */
#define SL_BACKEND 0
#ifndef SL_PAR_MIN_ELEMS /* smaller tensors run on the calling thread */
#define SL_PAR_MIN_ELEMS (1 << 20)
#endif

typedef struct {
    sl_task_fn fn;
    void *ctx;
    int64_t items, grain;
    int64_t next;    /* first unclaimed item (atomic) */
    int64_t pending; /* items claimed or not, but not finished (atomic) */
    int refs;        /* caller + live helpers; the last one frees (atomic) */
} sl_job;

static void sl_job_work(sl_job *j) {
    for (;;) {
        int64_t i = __atomic_fetch_add(&j->next, j->grain, __ATOMIC_RELAXED);
        if (i >= j->items) return;
        int64_t e = i + j->grain < j->items ? i + j->grain : j->items;
        j->fn(j->ctx, i, e);
        __atomic_fetch_sub(&j->pending, e - i, __ATOMIC_RELEASE);
    }
}

static void sl_job_release(sl_job *j) {
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0) free(j);
}

static void *sl_helper(void *arg) {
    sl_job_work((sl_job *)arg);
    sl_job_release((sl_job *)arg);
    return NULL;
}

/* Run fn over [0, items) with the caller and up to nt-1 detached helpers. */
static void sl_parallel(sl_task_fn fn, void *ctx, int64_t items, int nt) {
    sl_job *j = nt > 1 && items > 1 ? (sl_job *)malloc(sizeof(sl_job)) : NULL;
    if (!j) {
        if (items > 0) fn(ctx, 0, items);
        return;
    }
    j->fn = fn;
    j->ctx = ctx;
    j->items = j->pending = items;
    j->grain = items / (4 * (int64_t)nt) > 0 ? items / (4 * (int64_t)nt) : 1;
    j->next = 0;
    j->refs = 1;
    pthread_attr_t attr;
    int ok = pthread_attr_init(&attr) == 0;
    if (ok) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int t = 1; ok && t < nt; t++) {
        pthread_t tid;
        __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);
        if (pthread_create(&tid, &attr, sl_helper, j) != 0) {
            __atomic_sub_fetch(&j->refs, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    if (ok) pthread_attr_destroy(&attr);
    sl_job_work(j);
    /* wait only for items that helpers are still working on */
    while (__atomic_load_n(&j->pending, __ATOMIC_ACQUIRE) > 0) sched_yield();
    sl_job_release(j);
}
#endif /* _OPENMP */

/* Each thread gets at least this many elements. */
#ifndef SL_PAR_GRAIN
#define SL_PAR_GRAIN (1 << 14)
#endif
#define SL_MAX_THREADS 1024

/* Threads worth using for `elems` elements split into `items` pieces. */
static int sl_nthreads(int nthreads, int64_t elems, int64_t items) {
    if (nthreads <= 1 || elems < SL_PAR_MIN_ELEMS || items <= 1) return 1;
    int64_t t = elems / SL_PAR_GRAIN;
    if (t > nthreads) t = nthreads;
    if (t > items) t = items;
    if (t > SL_MAX_THREADS) t = SL_MAX_THREADS;
    return t < 1 ? 1 : (int)t;
}

/* Work items for the element-wise DCT kernels: (row, part) pairs, where a
 * row's index range [0, K) is split into `parts` pieces when there are too
 * few rows to keep the threads busy. */
typedef struct {
    const void *in, *a, *b;
    void *out;
    int64_t rows, n, parts;
} sl_dct_ctx;

/* Context of the row gather: out[r, j] = idx[j] >= 0 ? src[r, idx[j]] : 0. */
typedef struct {
    const void *src;
    const int64_t *idx;
    void *out;
    int64_t n_src, n_dst;
} sl_gather_ctx;

/* Context of the ACDC bin kernels: rows × m complex bins, per-bin coefficients. */
typedef struct {
    const void *z, *u, *c0, *c1, *c2;
    void *out, *acc;
    int64_t rows, m;
} sl_bins_ctx;

#define SL_BIN_CHUNK 256 /* bins per work item of the column-parallel kernels */

/* Context of the Fastfood kernels: `rows` rows of `nb` blocks of length `d`
 * (row length nb * d) on one side, a second operand with its own layout
 * (row stride `ld`, block stride `jstride`, length limit `nlim`). */
typedef struct {
    const void *src, *coef, *bias;
    const int64_t *idx;
    void *out, *scratch;
    int64_t rows, nb, d, ld, jstride, nlim, nsum, n_dst;
} sl_ff_ctx;

#define SL_FF_CHUNK 512 /* columns per work item of the Fastfood column sums */

static int64_t sl_dct_parts(int64_t rows, int64_t K, int nthreads) {
    if (nthreads <= 1 || rows >= 2 * (int64_t)nthreads) return 1;
    int64_t p = (2 * (int64_t)nthreads + rows - 1) / rows;
    int64_t pmax = K / 4096; /* keep each part >= 4K indices */
    if (p > pmax) p = pmax;
    return p < 1 ? 1 : p;
}

#define SL_PART_RANGE(item, parts, K, r, k0, k1) \
    int64_t r = (item) / (parts), p_ = (item) % (parts); \
    int64_t k0 = (K) * p_ / (parts), k1 = (K) * (p_ + 1) / (parts)

SL_EXPORT int sl_abi_version(void) { return SL_ABI_VERSION; }

/* 1 if built with OpenMP, 0 for the pthreads fallback. */
SL_EXPORT int sl_parallel_backend(void) { return SL_BACKEND; }

/* ---------------------------------------------------------------------- */
/* Instantiate the generic part for float and double.                     */

#define SL_GENERIC
#define T float
#define V sl_vf
#define VU sl_vf_u
#define VI sl_vfi
#define W SL_WF
#define LANES SL_LF
#define SFX(name) name##_f32
#include "kernels.c"
#undef T
#undef V
#undef VU
#undef VI
#undef W
#undef LANES
#undef SFX

#define T double
#define V sl_vd
#define VU sl_vd_u
#define VI sl_vdi
#define W SL_WD
#define LANES SL_LD
#define SFX(name) name##_f64
#include "kernels.c"
#undef T
#undef V
#undef VU
#undef VI
#undef W
#undef LANES
#undef SFX
#undef SL_GENERIC

#else /* ===================== SL_GENERIC: T, V, VU, VI, W, LANES, SFX ============ */

/* ---------------------------------------------------------------------- */
/* DCT reorder:  v[i] = x[2i] (i < ceil(n/2)),  v[n-1-i] = x[2i+1]          */
/*               (i < floor(n/2));  i.e. v = [x0, x2, x4, ..., x5, x3, x1]. */

static void SFX(reorder_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_dct_ctx *c = (const sl_dct_ctx *)c_;
    const int64_t n = c->n, K = (n + 1) / 2, h = n / 2;
    for (int64_t it = i0; it < i1; it++) {
        SL_PART_RANGE(it, c->parts, K, r, k0, k1);
        const T *restrict x = (const T *)c->in + r * n;
        T *restrict v = (T *)c->out + r * n;
        int64_t e = k1 < h ? k1 : h;
        SL_IVDEP
        for (int64_t i = k0; i < e; i++) {
            v[i] = x[2 * i];
            v[n - 1 - i] = x[2 * i + 1];
        }
        if ((n & 1) && k0 <= h && h < k1) v[h] = x[n - 1];
    }
}

/* DCT unreorder: the inverse permutation, x[2i] = v[i], x[2i+1] = v[n-1-i]. */
static void SFX(unreorder_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_dct_ctx *c = (const sl_dct_ctx *)c_;
    const int64_t n = c->n, K = (n + 1) / 2, h = n / 2;
    for (int64_t it = i0; it < i1; it++) {
        SL_PART_RANGE(it, c->parts, K, r, k0, k1);
        const T *restrict v = (const T *)c->in + r * n;
        T *restrict x = (T *)c->out + r * n;
        int64_t e = k1 < h ? k1 : h;
        SL_IVDEP
        for (int64_t i = k0; i < e; i++) {
            x[2 * i] = v[i];
            x[2 * i + 1] = v[n - 1 - i];
        }
        if ((n & 1) && k0 <= h && h < k1) x[n - 1] = v[h];
    }
}

/* DCT-II post-twiddle, z = rfft(reorder(x)), k = 0..n/2:
 *   out[k]   = a[k] Re z_k + b[k] Im z_k
 *   out[n-k] = b[k] Re z_k - a[k] Im z_k      (1 <= k < n-k)
 * With a = 2cos(pi k/2n), b = 2sin(pi k/2n): out = scipy dct type 2. */
static void SFX(post_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_dct_ctx *c = (const sl_dct_ctx *)c_;
    const int64_t n = c->n, m = n / 2 + 1, kp = (n + 1) / 2; /* pairs: 1..kp-1 */
    const T *restrict a = (const T *)c->a, *restrict b = (const T *)c->b;
    for (int64_t it = i0; it < i1; it++) {
        SL_PART_RANGE(it, c->parts, m, r, k0, k1);
        const T *restrict z = (const T *)c->in + r * 2 * m;
        T *restrict out = (T *)c->out + r * n;
        if (k0 == 0) {
            out[0] = a[0] * z[0] + b[0] * z[1];
            k0 = 1;
        }
        int64_t e = k1 < kp ? k1 : kp;
        SL_IVDEP
        for (int64_t k = k0; k < e; k++) {
            T re = z[2 * k], im = z[2 * k + 1];
            out[k] = a[k] * re + b[k] * im;
            out[n - k] = b[k] * re - a[k] * im;
        }
        if (!(n & 1) && n >= 2 && k0 <= n / 2 && n / 2 < k1) {
            int64_t k = n / 2;
            out[k] = a[k] * z[2 * k] + b[k] * z[2 * k + 1];
        }
    }
}

/* DCT-III pre-twiddle (transpose of the above), k = 0..n/2:
 *   Y = 0 (k = 0), X[n-k] (1 <= k <= n/2; X[n/2] itself when 2k = n)
 *   Re z_k = a[k] X[k] + b[k] Y,   Im z_k = b[k] X[k] - a[k] Y
 * With a = cos(pi k/2n)/2, b = sin(pi k/2n)/2:
 *   unreorder(irfft(z, n)) = scipy idct type 2 (norm=None). */
static void SFX(ipre_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_dct_ctx *c = (const sl_dct_ctx *)c_;
    const int64_t n = c->n, m = n / 2 + 1, kp = (n + 1) / 2;
    const T *restrict a = (const T *)c->a, *restrict b = (const T *)c->b;
    for (int64_t it = i0; it < i1; it++) {
        SL_PART_RANGE(it, c->parts, m, r, k0, k1);
        const T *restrict X = (const T *)c->in + r * n;
        T *restrict z = (T *)c->out + r * 2 * m;
        if (k0 == 0) {
            z[0] = a[0] * X[0];
            z[1] = b[0] * X[0];
            k0 = 1;
        }
        int64_t e = k1 < kp ? k1 : kp;
        SL_IVDEP
        for (int64_t k = k0; k < e; k++) {
            T xk = X[k], y = X[n - k];
            z[2 * k] = a[k] * xk + b[k] * y;
            z[2 * k + 1] = b[k] * xk - a[k] * y;
        }
        if (!(n & 1) && n >= 2 && k0 <= n / 2 && n / 2 < k1) {
            int64_t k = n / 2;
            T xk = X[k];
            z[2 * k] = a[k] * xk + b[k] * xk;
            z[2 * k + 1] = b[k] * xk - a[k] * xk;
        }
    }
}

static void SFX(dct_run)(sl_task_fn fn, const void *in, const void *a, const void *b,
                         void *out, int64_t rows, int64_t n, int64_t K, int nthreads) {
    if (rows <= 0 || n <= 0) return;
    sl_dct_ctx c = {in, a, b, out, rows, n, sl_dct_parts(rows, K, nthreads)};
    int64_t items = rows * c.parts;
    sl_parallel(fn, &c, items, sl_nthreads(nthreads, rows * n, items));
}

/* Gather along each row: out[r, j] = idx[j] >= 0 ? src[r, idx[j]] : 0 (zero padding). */
static void SFX(gather_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_gather_ctx *c = (const sl_gather_ctx *)c_;
    const int64_t *restrict idx = c->idx;
    const int64_t n_src = c->n_src, n_dst = c->n_dst;
    for (int64_t r = i0; r < i1; r++) {
        const T *restrict s = (const T *)c->src + r * n_src;
        T *restrict o = (T *)c->out + r * n_dst;
        for (int64_t j = 0; j < n_dst; j++) {
            int64_t k = idx[j];
            o[j] = k >= 0 ? s[k] : (T)0;
        }
    }
}

SL_EXPORT void SFX(sl_gather)(const T *src, const int64_t *idx, T *out, int64_t rows, int64_t n_src,
                              int64_t n_dst, int nthreads) {
    if (rows <= 0 || n_dst <= 0) return;
    sl_gather_ctx c = {src, idx, out, n_src, n_dst};
    sl_parallel(SFX(gather_task), &c, rows, sl_nthreads(nthreads, rows * n_dst, rows));
}

/* ACDC per-bin map, in place allowed: for each bin z = R + iI,
 * out = (m00 R + m01 I) + i (m01 R + m11 I). Parallel over rows. */
static void SFX(bin_map_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_bins_ctx *c = (const sl_bins_ctx *)c_;
    const T *m00 = (const T *)c->c0, *m01 = (const T *)c->c1, *m11 = (const T *)c->c2;
    const int64_t m = c->m;
    for (int64_t r = i0; r < i1; r++) {
        const T *z = (const T *)c->z + 2 * r * m;
        T *o = (T *)c->out + 2 * r * m;
        SL_IVDEP
        for (int64_t k = 0; k < m; k++) {
            T re = z[2 * k], im = z[2 * k + 1];
            o[2 * k] = m00[k] * re + m01[k] * im;
            o[2 * k + 1] = m01[k] * re + m11[k] * im;
        }
    }
}

SL_EXPORT void SFX(sl_bin_map)(const T *z, const T *m00, const T *m01, const T *m11, T *out,
                               int64_t rows, int64_t m, int nthreads) {
    if (rows <= 0 || m <= 0) return;
    sl_bins_ctx c = {z, NULL, m00, m01, m11, out, NULL, rows, m};
    sl_parallel(SFX(bin_map_task), &c, rows, sl_nthreads(nthreads, rows * m * 2, rows));
}

/* The two uses of the output-gradient spectrum G in the ACDC backward in one pass: for each bin k, summed
 * over rows, acc[3k] = Σ GR UR,  acc[3k+1] = Σ (GR UI + GI UR),  acc[3k+2] = Σ GI UI (the coefficient
 * gradients, with U the block's input spectrum); then G mapped in place as by sl_bin_map.
 * Parallel over chunks of bins, so no two threads write the same sum. */
static void SFX(bin_grad_map_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_bins_ctx *c = (const sl_bins_ctx *)c_;
    const T *m00 = (const T *)c->c0, *m01 = (const T *)c->c1, *m11 = (const T *)c->c2;
    const int64_t m = c->m;
    T *acc = (T *)c->acc;
    for (int64_t it = i0; it < i1; it++) {
        int64_t k0 = it * SL_BIN_CHUNK, k1 = k0 + SL_BIN_CHUNK < m ? k0 + SL_BIN_CHUNK : m;
        for (int64_t k = k0; k < k1; k++) acc[3 * k] = acc[3 * k + 1] = acc[3 * k + 2] = 0;
        for (int64_t r = 0; r < c->rows; r++) {
            T *g = (T *)c->out + 2 * r * m;
            const T *u = (const T *)c->u + 2 * r * m;
            SL_IVDEP
            for (int64_t k = k0; k < k1; k++) {
                T gr = g[2 * k], gi = g[2 * k + 1], ur = u[2 * k], ui = u[2 * k + 1];
                acc[3 * k] += gr * ur;
                acc[3 * k + 1] += gr * ui + gi * ur;
                acc[3 * k + 2] += gi * ui;
                g[2 * k] = m00[k] * gr + m01[k] * gi;
                g[2 * k + 1] = m01[k] * gr + m11[k] * gi;
            }
        }
    }
}

SL_EXPORT void SFX(sl_bin_grad_map)(T *g, const T *u, const T *m00, const T *m01, const T *m11, T *acc,
                                    int64_t rows, int64_t m, int nthreads) {
    if (m <= 0) return;
    sl_bins_ctx c = {NULL, u, m00, m01, m11, g, acc, rows, m};
    int64_t items = (m + SL_BIN_CHUNK - 1) / SL_BIN_CHUNK;
    sl_parallel(SFX(bin_grad_map_task), &c, items, sl_nthreads(nthreads, rows * m * 2, items));
}

/* acc[k] = Σ_r g[r, k] x[r, k], then g[r, k] *= a[k] in place: the ACDC grad_A and grad_x of a block in one
 * pass over g. With relu_mask, g[r, k] becomes 0 where x[r, k] <= 0 (x being a ReLU's output, that is the
 * ReLU's gradient). Parallel over column chunks, so each sum has one writer. */
static void SFX(colsum_scale_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_ff_ctx *c = (const sl_ff_ctx *)c_;
    const int64_t n = c->d;
    const T *a = (const T *)c->bias;
    T *acc = (T *)c->out;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t k0 = it * SL_FF_CHUNK, k1 = k0 + SL_FF_CHUNK < n ? k0 + SL_FF_CHUNK : n;
        for (int64_t k = k0; k < k1; k++) acc[k] = 0;
        for (int64_t r = 0; r < c->rows; r++) {
            T *g = (T *)c->scratch + r * n;
            const T *x = (const T *)c->coef + r * n;
            if (c->nsum) {
                SL_IVDEP
                for (int64_t k = k0; k < k1; k++) {
                    acc[k] += g[k] * x[k];
                    g[k] = x[k] > 0 ? g[k] * a[k] : (T)0;
                }
            } else {
                SL_IVDEP
                for (int64_t k = k0; k < k1; k++) {
                    acc[k] += g[k] * x[k];
                    g[k] *= a[k];
                }
            }
        }
    }
}

SL_EXPORT void SFX(sl_colsum_scale)(T *g, const T *x, const T *a, T *acc, int64_t rows, int64_t n, int relu_mask,
                                    int nthreads) {
    if (n <= 0) return;
    sl_ff_ctx c = {NULL, x, a, NULL, acc, g, rows, 1, n, n, 0, n, relu_mask != 0, 0}; /* nsum: the mask flag */
    int64_t items = (n + SL_FF_CHUNK - 1) / SL_FF_CHUNK;
    sl_parallel(SFX(colsum_scale_task), &c, items, sl_nthreads(nthreads, rows * n, items));
}

SL_EXPORT void SFX(sl_dct_reorder)(const T *x, T *v, int64_t rows, int64_t n, int nthreads) {
    SFX(dct_run)(SFX(reorder_task), x, NULL, NULL, v, rows, n, (n + 1) / 2, nthreads);
}

SL_EXPORT void SFX(sl_dct_unreorder)(const T *v, T *x, int64_t rows, int64_t n, int nthreads) {
    SFX(dct_run)(SFX(unreorder_task), v, NULL, NULL, x, rows, n, (n + 1) / 2, nthreads);
}

SL_EXPORT void SFX(sl_dct_post)(const T *z, const T *a, const T *b, T *out, int64_t rows,
                                int64_t n, int nthreads) {
    SFX(dct_run)(SFX(post_task), z, a, b, out, rows, n, n / 2 + 1, nthreads);
}

SL_EXPORT void SFX(sl_idct_pre)(const T *X, const T *a, const T *b, T *z, int64_t rows,
                                int64_t n, int nthreads) {
    SFX(dct_run)(SFX(ipre_task), X, a, b, z, rows, n, n / 2 + 1, nthreads);
}

/* ---------------------------------------------------------------------- */
/* Fast Walsh-Hadamard transform                                           */
/*                                                                          */
/* y = scale * H_n x per row, H_{2n} = [[H, H], [H, -H]] (Sylvester order). */
/* Stage with stride h: (x_i, x_{i+h}) <- (x_i + x_{i+h}, x_i - x_{i+h})    */
/* for every i with (i & h) == 0.  Strides h < W live inside one vector     */
/* (lane permute + fma with a +-1 sign vector); larger strides are          */
/* butterflies between whole vectors, up to log2(SL_RMAX) stages per pass   */
/* over memory.  Rows up to SL_FWHT_L1_BYTES are done in L1; longer rows   */
/* recursively: sub-blocks first, then radix-<=16 passes at large strides.  */

#define SFX_IDX(i, h) (((i) ^ (h)) & (W - 1))
#define SFX_SGN(i, h) ((i) & (h) ? (T)-1 : (T)1)

SL_INLINE V SFX(ld)(const T *p) { return *(const VU *)p; }
SL_INLINE void SFX(st)(T *p, V v) { *(VU *)p = v; }

/* In-vector stage with lane stride h (h < W): x_i <- x_{i^h} +- x_i. */
#define SFX_LSTAGE(x, h) \
    ((x) * (V){LANES(SFX_SGN, h)} + SL_PERM(x, VI, LANES(SFX_IDX, h)))

/* All in-vector stages with lane stride < lim (lim <= W). */
SL_INLINE V SFX(lanes)(V x, int lim) {
    if (W > 1 && lim > 1) x = SFX_LSTAGE(x, 1);
    if (W > 2 && lim > 2) x = SFX_LSTAGE(x, 2);
    if (W > 4 && lim > 4) x = SFX_LSTAGE(x, 4);
    if (W > 8 && lim > 8) x = SFX_LSTAGE(x, 8);
    return x;
}

/* Full size-r WHT across r vectors held in registers.  On x86 with FMA,
 * half of the differences are computed as fma(q, -1, p) (exactly p - q): on
 * AMD Zen the adds and the FMAs run on separate pipes, and the add pipes are
 * the bottleneck (~10% faster).  m1 must be an opaque -1 (see m1 below). */
#define SFX_BF(i)                                                     \
    if ((i) + h_ < r && !((i) & h_)) {                                \
        V p_ = v[i], q_ = v[(i) + h_];                                \
        v[i] = p_ + q_;                                               \
        v[(i) + h_] = SL_FMA_SUB && (fmask & h_) ? q_ * m1 + p_ : p_ - q_; \
    }
#define SFX_BF_STAGE(h) \
    if (h < r) {        \
        const int h_ = h; \
        SL_FOR16(SFX_BF) \
    }
SL_INLINE void SFX(bfly)(V *v, const int r, V m1, const int fmask) {
    (void)m1;
    (void)fmask;
    SFX_BF_STAGE(1) SFX_BF_STAGE(2) SFX_BF_STAGE(4) SFX_BF_STAGE(8)
}

/* -1 in every lane, hidden from the optimizer so q * m1 + p stays an FMA. */
SL_INLINE V SFX(m1)(void) {
    V m1 = (V){0} - 1;
#if SL_FMA_SUB
    __asm__("" : "+v"(m1));
#endif
    return m1;
}

/* First pass: blocks of r contiguous vectors; in-vector stages then a
 * radix-r step: covers strides 1 .. r*W/2. */
SL_INLINE void SFX(pass0_r)(T *x, int64_t nv, const int r, T scale, const int scl) {
    const V s = (V){0} + scale, m1 = SFX(m1)();
    for (int64_t j = 0; j < nv; j += r) {
        T *p = x + j * W;
        V v[16];
#define SFX_LD(i) if ((i) < r) v[i] = SFX(lanes)(SFX(ld)(p + (i) * W), W);
#define SFX_ST(i) if ((i) < r) SFX(st)(p + (i) * W, scl ? v[i] * s : v[i]);
        SL_FOR16(SFX_LD)
        SFX(bfly)(v, r, m1, SL_FMASK0);
        SL_FOR16(SFX_ST)
#undef SFX_LD
#undef SFX_ST
    }
}

/* Radix-r pass at vector stride s (stages s, 2s, .., rs/2, in vectors),
 * over nv vectors, columns t0 <= t < t1 of every block of r*s vectors. */
SL_INLINE void SFX(pass_r)(T *x, int64_t nv, int64_t s, int64_t t0, int64_t t1,
                           const int r, T scale, const int scl) {
    const V sv = (V){0} + scale, m1 = SFX(m1)();
    const int64_t st = s * W;
    for (int64_t blk = 0; blk < nv; blk += r * s) {
        for (int64_t t = t0; t < t1; t++) {
            T *p = x + (blk + t) * W;
            V v[16];
#define SFX_LD(i) if ((i) < r) v[i] = SFX(ld)(p + (i) * st);
#define SFX_ST(i) if ((i) < r) SFX(st)(p + (i) * st, scl ? v[i] * sv : v[i]);
            SL_FOR16(SFX_LD)
            SFX(bfly)(v, r, m1, SL_FMASK1);
            SL_FOR16(SFX_ST)
#undef SFX_LD
#undef SFX_ST
        }
    }
}

SL_NOINLINE void SFX(pass0)(T *x, int64_t nv, int r, T scale, int scl) {
#define SFX_CASE(R)                                   \
    case R:                                           \
        if (scl)                                      \
            SFX(pass0_r)(x, nv, R, scale, 1);         \
        else                                          \
            SFX(pass0_r)(x, nv, R, scale, 0);         \
        break;
    switch (r) {
        SFX_CASE(1) SFX_CASE(2) SFX_CASE(4) SFX_CASE(8)
#if SL_RMAX >= 16
        SFX_CASE(16)
#endif
    }
#undef SFX_CASE
}

SL_NOINLINE void SFX(pass)(T *x, int64_t nv, int64_t s, int64_t t0, int64_t t1, int r, T scale,
                           int scl) {
#define SFX_CASE(R)                                          \
    case R:                                                  \
        if (scl)                                             \
            SFX(pass_r)(x, nv, s, t0, t1, R, scale, 1);      \
        else                                                 \
            SFX(pass_r)(x, nv, s, t0, t1, R, scale, 0);      \
        break;
    switch (r) {
        SFX_CASE(2) SFX_CASE(4) SFX_CASE(8)
#if SL_RMAX >= 16
        SFX_CASE(16)
#endif
    }
#undef SFX_CASE
}

static int64_t SFX(min64)(int64_t a, int64_t b) { return a < b ? a : b; }

/* Radix of the next pass when `left` (a power of two > 1) vector strides
 * remain: fewest passes, balanced (8,4 rather than 16,2). */
static int SFX(radix)(int64_t left) {
    int L = 0, M = 0;
    while (((int64_t)1 << L) < left) L++;
    while ((1 << M) < SL_RMAX) M++;
    int P = (L + M - 1) / M;
    return 1 << ((L + P - 1) / P);
}

/* Radix passes over vector strides s0 .. nv/2 of an array of nv vectors. */
static void SFX(stride_passes)(T *x, int64_t nv, int64_t s0, T scale, int scl) {
    for (int64_t s = s0; s < nv;) {
        int r = SFX(radix)(nv / s);
        SFX(pass)(x, nv, s, 0, s, r, scale, scl && s * r == nv);
        s *= r;
    }
}

/* Whole WHT of a row of n elements (W <= n, n*sizeof(T) <= L1 budget). */
static void SFX(fwht_l1)(T *x, int64_t n, T scale, int scl) {
    int64_t nv = n / W;
    int r0 = (int)SFX(min64)(nv, SL_RMAX);
    SFX(pass0)(x, nv, r0, scale, scl && r0 == nv);
    SFX(stride_passes)(x, nv, r0, scale, scl);
}

/* Long rows (n > C, the L1 chunk): peel off the top stages,
 *   H_n = H_r (x) H_{n/r},   r <= SL_FWHT_TOP_RMAX,
 * i.e. transform the r sub-blocks of length n/r (recursively, depth-first so
 * each stays in L2/L1 while worked on), then one radix-r pass at stride n/r.
 * (Strides here are multiples of 4 KiB, so all r rows of a radix-r step hit
 * one L1 set: r = 16 would overflow its 8 ways.) */
static int64_t SFX(top_radix)(int64_t n, int64_t C) {
    int L = 0, M = 0;
    while ((C << L) < n) L++;
    while ((1 << M) < SL_FWHT_TOP_RMAX) M++;
    int P = (L + M - 1) / M; /* passes left; balance them */
    return (int64_t)1 << (L / P);
}

static void SFX(fwht_long)(T *x, int64_t n, int64_t C, T scale, int scl) {
    if (n <= C) {
        SFX(fwht_l1)(x, n, scale, scl);
        return;
    }
    const int64_t r = SFX(top_radix)(n, C), sub = n / r;
    for (int64_t j = 0; j < r; j++) SFX(fwht_long)(x + j * sub, sub, C, scale, 0);
    SFX(pass)(x, n / W, sub / W, 0, sub / W, (int)r, scale, scl);
}

/* Plain scalar WHT of one row (leftover rows when n < W). */
static void SFX(fwht_scalar)(T *x, int64_t n, T scale, int scl) {
    for (int64_t h = 1; h < n; h <<= 1)
        for (int64_t i = 0; i < n; i += 2 * h)
            for (int64_t j = i; j < i + h; j++) {
                T p = x[j], q = x[j + h];
                x[j] = p + q;
                x[j + h] = p - q;
            }
    if (scl)
        for (int64_t i = 0; i < n; i++) x[i] *= scale;
}

typedef struct {
    T *x;
    int64_t rows, n, C;
    T scale;
    int scl;
} SFX(fwht_ctx);

static void SFX(fwht_rows_task)(void *c_, int64_t r0, int64_t r1) {
    const SFX(fwht_ctx) *c = c_;
    for (int64_t r = r0; r < r1; r++) SFX(fwht_long)(c->x + r * c->n, c->n, c->C, c->scale, c->scl);
}

/* Few long rows, phase 1: items = (row, top-level sub-block). */
static void SFX(fwht_subs_task)(void *c_, int64_t i0, int64_t i1) {
    const SFX(fwht_ctx) *c = c_;
    const int64_t r = SFX(top_radix)(c->n, c->C), sub = c->n / r;
    for (int64_t i = i0; i < i1; i++)
        SFX(fwht_long)(c->x + (i / r) * c->n + (i % r) * sub, sub, c->C, c->scale, 0);
}

#define SFX_TOP_PARTS 64 /* column ranges per row in phase 2 */

/* Few long rows, phase 2: items = (row, column range of the top pass). */
static void SFX(fwht_top_task)(void *c_, int64_t i0, int64_t i1) {
    const SFX(fwht_ctx) *c = c_;
    const int64_t r = SFX(top_radix)(c->n, c->C), sv = c->n / r / W;
    for (int64_t i = i0; i < i1; i++) {
        int64_t row = i / SFX_TOP_PARTS, p = i % SFX_TOP_PARTS;
        SFX(pass)(c->x + row * c->n, c->n / W, sv, sv * p / SFX_TOP_PARTS,
                  sv * (p + 1) / SFX_TOP_PARTS, (int)r, c->scale, c->scl);
    }
}

/* n < W: contiguous rows packed into vectors (n divides W). */
static void SFX(fwht_small_task)(void *c_, int64_t v0, int64_t v1) {
    const SFX(fwht_ctx) *c = c_;
    const V s = (V){0} + c->scale;
    const int lim = (int)c->n;
    for (int64_t j = v0; j < v1; j++) {
        V v = SFX(lanes)(SFX(ld)(c->x + j * W), lim);
        SFX(st)(c->x + j * W, c->scl ? v * s : v);
    }
}

SL_EXPORT void SFX(sl_fwht)(T *x, int64_t rows, int64_t n, T scale, int nthreads) {
    if (rows <= 0 || n <= 0) return;
    int64_t C = SL_FWHT_L1_BYTES / sizeof(T);
    SFX(fwht_ctx) c = {x, rows, n, C > W ? C : W, scale, scale != (T)1};
    const int64_t total = rows * n;
    if (n < W) {
        int64_t nvec = total / W;
        sl_parallel(SFX(fwht_small_task), &c, nvec, sl_nthreads(nthreads, total, nvec));
        for (int64_t r = nvec * W / n; r < rows; r++) SFX(fwht_scalar)(x + r * n, n, scale, c.scl);
        return;
    }
    int nt = sl_nthreads(nthreads, total, INT64_MAX);
    if (n <= c.C || rows >= 4 * (int64_t)nt || nt <= 1) {
        sl_parallel(SFX(fwht_rows_task), &c, rows, sl_nthreads(nthreads, total, rows));
        return;
    }
    /* few long rows: sub-blocks, then the top pass by column ranges */
    int64_t items = rows * SFX(top_radix)(n, c.C);
    sl_parallel(SFX(fwht_subs_task), &c, items, sl_nthreads(nthreads, total, items));
    items = rows * SFX_TOP_PARTS;
    sl_parallel(SFX(fwht_top_task), &c, items, sl_nthreads(nthreads, total, items));
}

#undef SFX_IDX
#undef SFX_SGN
#undef SFX_BF
#undef SFX_BF_STAGE
#undef SFX_LSTAGE
#undef SFX_TOP_PARTS

/* ---------------------------------------------------------------------- */
/* Fastfood: gathers fused with diagonal scalings, and column sums.        */

#define SL_FF_ROWS 4 /* rows per work item of the gather: one index load serves four rows */

/* out[r, j, k] = D[j, k] * src[r * ld + j * jstride + i], where i = idx[j, k]
 * (idx given, every entry >= 0) or i = k (idx NULL; k >= nlim gives 0).
 * Items are (group of SL_FF_ROWS rows, block) pairs. */
static void SFX(ff_gather_scale_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_ff_ctx *c = (const sl_ff_ctx *)c_;
    const int64_t d = c->d, nb = c->nb, ld = c->ld;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t r0 = (it / nb) * SL_FF_ROWS, j = it % nb;
        const int64_t r1 = r0 + SL_FF_ROWS < c->rows ? r0 + SL_FF_ROWS : c->rows;
        const T *restrict D = (const T *)c->coef + j * d;
        const T *s = (const T *)c->src + r0 * ld + j * c->jstride;
        T *o = (T *)c->out + (r0 * nb + j) * d;
        const int64_t od = nb * d; /* row stride of out */
        if (c->idx && r1 - r0 == 4) {
            const int64_t *restrict idx = c->idx + j * d;
            const T *restrict s0 = s, *restrict s1 = s + ld, *restrict s2 = s + 2 * ld, *restrict s3 = s + 3 * ld;
            T *restrict o0 = o, *restrict o1 = o + od, *restrict o2 = o + 2 * od, *restrict o3 = o + 3 * od;
            for (int64_t k = 0; k < d; k++) {
                const int64_t i = idx[k];
                const T dk = D[k];
                o0[k] = dk * s0[i];
                o1[k] = dk * s1[i];
                o2[k] = dk * s2[i];
                o3[k] = dk * s3[i];
            }
            continue;
        }
        for (int64_t r = r0; r < r1; r++, s += ld, o += od) {
            if (c->idx) {
                const int64_t *restrict idx = c->idx + j * d;
                SL_IVDEP
                for (int64_t k = 0; k < d; k++) o[k] = D[k] * s[idx[k]];
            } else {
                const int64_t e = c->nlim < d ? c->nlim : d;
                SL_IVDEP
                for (int64_t k = 0; k < e; k++) o[k] = D[k] * s[k];
                for (int64_t k = e; k < d; k++) o[k] = 0;
            }
        }
    }
}

SL_EXPORT void SFX(sl_ff_gather_scale)(const T *src, const int64_t *idx, const T *D, T *out, int64_t rows,
                                       int64_t nb, int64_t d, int64_t ld, int64_t jstride, int64_t nlim,
                                       int nthreads) {
    if (rows <= 0 || nb <= 0 || d <= 0) return;
    sl_ff_ctx c = {src, D, NULL, idx, out, NULL, rows, nb, d, ld, jstride, nlim, 1, 0};
    const int64_t items = (rows + SL_FF_ROWS - 1) / SL_FF_ROWS * nb;
    sl_parallel(SFX(ff_gather_scale_task), &c, items, sl_nthreads(nthreads, rows * nb * d, items));
}

/* out[r, k] = sum_{j < nsum} D[j * d + k] * src[r * ld + j * d + k] (+ bias[k])
 * for k < nlim, and 0 for nlim <= k < n_dst.  With nsum = 1 and out == src
 * (same row stride) it runs in place. Items are rows. */
static void SFX(ff_scale_sum_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_ff_ctx *c = (const sl_ff_ctx *)c_;
    const int64_t d = c->d, e = c->nlim < c->n_dst ? c->nlim : c->n_dst;
    const T *D = (const T *)c->coef, *bias = (const T *)c->bias;
    for (int64_t r = i0; r < i1; r++) {
        const T *s = (const T *)c->src + r * c->ld;
        T *o = (T *)c->out + r * c->n_dst;
        if (c->nsum == 1) {
            if (bias) {
                SL_IVDEP
                for (int64_t k = 0; k < e; k++) o[k] = D[k] * s[k] + bias[k];
            } else {
                SL_IVDEP
                for (int64_t k = 0; k < e; k++) o[k] = D[k] * s[k];
            }
        } else {
            SL_IVDEP
            for (int64_t k = 0; k < e; k++) o[k] = D[k] * s[k];
            for (int64_t j = 1; j < c->nsum; j++) {
                const T *Dj = D + j * d, *sj = s + j * d;
                SL_IVDEP
                for (int64_t k = 0; k < e; k++) o[k] += Dj[k] * sj[k];
            }
            if (bias) {
                SL_IVDEP
                for (int64_t k = 0; k < e; k++) o[k] += bias[k];
            }
        }
        for (int64_t k = e; k < c->n_dst; k++) o[k] = 0;
    }
}

SL_EXPORT void SFX(sl_ff_scale_sum)(const T *src, const T *D, const T *bias, T *out, int64_t rows,
                                    int64_t nsum, int64_t d, int64_t ld, int64_t nlim, int64_t n_dst,
                                    int nthreads) {
    if (rows <= 0 || n_dst <= 0) return;
    sl_ff_ctx c = {src, D, bias, NULL, out, NULL, rows, 1, d, ld, 0, nlim, nsum, n_dst};
    sl_parallel(SFX(ff_scale_sum_task), &c, rows, sl_nthreads(nthreads, rows * (nsum * d > n_dst ? nsum * d : n_dst), rows));
}

/* acc[j * d + k] = sum_r a[r, j, k] * b[r * ld + j * jstride + i], i = idx[j, k]
 * (idx given) or i = k (idx NULL; terms with j * jstride + k >= nlim are 0).
 * a: rows x (nb * d). Parallel over column chunks, so each sum has one writer. */
static void SFX(ff_colsum_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_ff_ctx *c = (const sl_ff_ctx *)c_;
    const int64_t d = c->d, n = c->nb * d;
    T *acc = (T *)c->out;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t c0 = it * SL_FF_CHUNK, c1 = c0 + SL_FF_CHUNK < n ? c0 + SL_FF_CHUNK : n;
        for (int64_t q = c0; q < c1; q++) acc[q] = 0;
        /* a chunk never straddles blocks when d >= SL_FF_CHUNK; otherwise walk block by block */
        for (int64_t q0 = c0; q0 < c1;) {
            const int64_t j = q0 / d, k0 = q0 % d;
            const int64_t q1 = (j + 1) * d < c1 ? (j + 1) * d : c1, k1 = k0 + (q1 - q0);
            int64_t ke = k1;
            if (!c->idx) {
                int64_t lim = c->nlim - j * c->jstride;
                if (lim < k0) lim = k0;
                if (ke > lim) ke = lim;
            }
            for (int64_t r = 0; r < c->rows; r++) {
                const T *a = (const T *)c->src + r * n + j * d;
                const T *b = (const T *)c->coef + r * c->ld + j * c->jstride;
                T *s = acc + j * d;
                if (c->idx) {
                    const int64_t *idx = c->idx + j * d;
                    for (int64_t k = k0; k < ke; k++) s[k] += a[k] * b[idx[k]];
                } else {
                    SL_IVDEP
                    for (int64_t k = k0; k < ke; k++) s[k] += a[k] * b[k];
                }
            }
            q0 = q1;
        }
    }
}

/* The gathered column sums row by row (a row of b stays in L1 while its
 * random reads run): item p of P = n_dst sums rows [rows p / P,
 * rows (p + 1) / P) into acc (p = 0) or scratch + (p - 1) nb d. */
static void SFX(ff_colsum_rows_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_ff_ctx *c = (const sl_ff_ctx *)c_;
    const int64_t d = c->d, nb = c->nb, n = nb * d, P = c->n_dst;
    for (int64_t p = i0; p < i1; p++) {
        T *restrict acc = p == 0 ? (T *)c->out : (T *)c->scratch + (p - 1) * n;
        for (int64_t q = 0; q < n; q++) acc[q] = 0;
        for (int64_t r = c->rows * p / P; r < c->rows * (p + 1) / P; r++) {
            for (int64_t j = 0; j < nb; j++) {
                const T *restrict a = (const T *)c->src + r * n + j * d;
                const T *restrict b = (const T *)c->coef + r * c->ld + j * c->jstride;
                const int64_t *restrict idx = c->idx + j * d;
                T *restrict s = acc + j * d;
                for (int64_t k = 0; k < d; k++) s[k] += a[k] * b[idx[k]];
            }
        }
    }
}

SL_EXPORT void SFX(sl_ff_colsum)(const T *a, const T *b, const int64_t *idx, T *acc, int64_t rows, int64_t nb,
                                 int64_t d, int64_t ld, int64_t jstride, int64_t nlim, int nthreads) {
    if (nb <= 0 || d <= 0) return;
    if (idx) {
        const int64_t n = nb * d;
        int P = sl_nthreads(nthreads, rows * n, rows);
        T *scratch = P > 1 ? (T *)malloc(sizeof(T) * n * (P - 1)) : NULL;
        if (!scratch) P = 1;
        sl_ff_ctx c = {a, b, NULL, idx, acc, scratch, rows, nb, d, ld, jstride, nlim, 1, P};
        sl_parallel(SFX(ff_colsum_rows_task), &c, P, P);
        for (int p = 1; p < P; p++) {
            const T *part = scratch + (int64_t)(p - 1) * n;
            SL_IVDEP
            for (int64_t q = 0; q < n; q++) acc[q] += part[q];
        }
        free(scratch);
        return;
    }
    sl_ff_ctx c = {a, b, NULL, idx, acc, NULL, rows, nb, d, ld, jstride, nlim, 1, 0};
    int64_t items = (nb * d + SL_FF_CHUNK - 1) / SL_FF_CHUNK;
    sl_parallel(SFX(ff_colsum_task), &c, items, sl_nthreads(nthreads, rows * nb * d, items));
}

#endif /* SL_GENERIC */
