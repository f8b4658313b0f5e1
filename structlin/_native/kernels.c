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

#define SL_ABI_VERSION 8

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
/* Two-input lane selection: lane i of the result is lane idx[i] of the concatenation (a, b). */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SL_PERM2(a, b, vi, idx) __builtin_shufflevector(a, b, idx)
#else
#define SL_PERM2(a, b, vi, idx) __builtin_shuffle(a, b, (vi){idx})
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

/* Context of the pair map along one dimension of a complex array (outer, n, inner): see pair_map_task. */
typedef struct {
    const void *z, *p, *q;
    void *out;
    int64_t outer, n, inner;
} sl_pair_ctx;

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

/* ---------------------------------------------------------------------- */
/* ACDC cascade on chunks of rows (see the SL_GENERIC part): shared context */

/* One call of sl_acdc_forward / sl_acdc_backward. Rows are cut into chunks of
 * W (the vector width in elements); workers claim chunks (forward) or groups of
 * consecutive chunks (backward, each with its own gradient sums, added in group
 * order afterwards, so that the result does not depend on which worker ran
 * which group) from an atomic counter, so a worker that is descheduled holds up
 * only the piece it claimed. */
typedef struct {
    const void *x, *g, *tw;
    const void *a, *cf;     /* A in Makhoul order (k, n); the per-bin coefficients by slot (see cascade_parameters) */
    const void *shift;      /* NULL, or each block's output offset (k, n), packed (see packed_offsets) */
    const int64_t *in_pos;  /* (n_in,): column c of x goes to position in_pos[c] of the first block (< 0: unused) */
    const int64_t *out_idx; /* (n_out,): column j of y is position out_idx[j] of the last block's output */
    const int64_t *perm, *perm_inv, *br;
    const int64_t *blocks; /* k row-major block inputs (backward) or outputs to keep (forward; 0 = none); or NULL */
    void *y;               /* forward: output (rows, n_out); backward: input gradient (rows, n_in) */
    void *acc;             /* backward: `groups` sums of (k * n grad_a, k * 3 * (n/2 + 1) coefficient sums and,
                            * with a shift, k * n sums of the block output gradients) */
    int64_t rows, n, k, n_in, n_out, nchunks, groups, per_group;
    int relu, in_full, out_full; /* in_full: the columns of x reach every position; out_full: likewise for g */
    int64_t next, done;    /* next piece to claim, pieces finished (atomic) */
} sl_cascade_ctx;

/* Workspaces above this size are allocated per call rather than kept by the thread. */
#ifndef SL_WS_KEEP_MAX
#define SL_WS_KEEP_MAX ((size_t)64 << 20)
#endif

#ifdef _OPENMP
static __thread void *sl_ws_ptr;
static __thread size_t sl_ws_size;
#endif

/* A 64-byte aligned workspace of `bytes` for the calling thread, or NULL. With
 * OpenMP the threads are torch's long-lived pool, so each keeps its largest
 * workspace (up to SL_WS_KEEP_MAX) for the next call: no page faults per call.
 * *owned is set when the caller must free() it. */
static void *sl_workspace(size_t bytes, int *owned) {
    void *p = NULL;
#ifdef _OPENMP
    if (bytes <= SL_WS_KEEP_MAX) {
        if (sl_ws_size < bytes) {
            free(sl_ws_ptr);
            sl_ws_ptr = NULL;
            sl_ws_size = 0;
            if (posix_memalign(&p, 64, bytes) != 0) return NULL;
            sl_ws_ptr = p;
            sl_ws_size = bytes;
        }
        *owned = 0;
        return sl_ws_ptr;
    }
#endif
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    *owned = 1;
    return p;
}

/* Claim the next piece, or -1 when none is left. */
static int64_t sl_claim(sl_cascade_ctx *c, int64_t pieces) {
    int64_t i = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
    return i < pieces ? i : -1;
}

SL_EXPORT int sl_abi_version(void) { return SL_ABI_VERSION; }

/* Vector width in bytes (the cascade kernels work on chunks of SL_VBYTES / sizeof(T) rows). */
SL_EXPORT int sl_vector_bytes(void) { return SL_VBYTES; }

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

/* Makhoul's reorder (inverse = 0) or its inverse (1) along the last dimension, reading the rows of each of
 * `outer` groups through a row table: out[o, r, :] = perm(x[o, idx[r], :]) for r < R (x, out: (outer, R, n)).
 * The n-D DCT's reorder along the last and the adjacent leading dimensions in one pass (idx: their joint
 * permutation). */
typedef struct {
    const T *x;
    const int64_t *idx;
    T *out;
    int64_t R, n;
    int inverse;
} SFX(rows_perm_ctx);

static void SFX(rows_perm_task)(void *c_, int64_t i0, int64_t i1) {
    const SFX(rows_perm_ctx) *c = (const SFX(rows_perm_ctx) *)c_;
    const int64_t n = c->n, R = c->R, h = n / 2;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t o = it / R, r = it % R;
        const T *restrict x = c->x + (o * R + c->idx[r]) * n;
        T *restrict v = c->out + it * n;
        if (!c->inverse) {
            SL_IVDEP
            for (int64_t i = 0; i < h; i++) {
                v[i] = x[2 * i];
                v[n - 1 - i] = x[2 * i + 1];
            }
            if (n & 1) v[h] = x[n - 1];
        } else {
            SL_IVDEP
            for (int64_t i = 0; i < h; i++) {
                v[2 * i] = x[i];
                v[2 * i + 1] = x[n - 1 - i];
            }
            if (n & 1) v[n - 1] = x[h];
        }
    }
}

SL_EXPORT void SFX(sl_dct_reorder_rows)(const T *x, const int64_t *idx, T *out, int64_t outer, int64_t R, int64_t n,
                                        int inverse, int nthreads) {
    if (outer <= 0 || R <= 0 || n <= 0) return;
    SFX(rows_perm_ctx) c = {x, idx, out, R, n, inverse};
    const int64_t items = outer * R;
    sl_parallel(SFX(rows_perm_task), &c, items, sl_nthreads(nthreads, items * n, items));
}

SL_EXPORT void SFX(sl_dct_post)(const T *z, const T *a, const T *b, T *out, int64_t rows,
                                int64_t n, int nthreads) {
    SFX(dct_run)(SFX(post_task), z, a, b, out, rows, n, n / 2 + 1, nthreads);
}

SL_EXPORT void SFX(sl_idct_pre)(const T *X, const T *a, const T *b, T *z, int64_t rows,
                                int64_t n, int nthreads) {
    SFX(dct_run)(SFX(ipre_task), X, a, b, z, rows, n, n / 2 + 1, nthreads);
}

/* The n-D DCT's pair map along one dimension, one pass: for complex z, out of shape (outer, n, inner)
 * (interleaved re, im) and complex p, q (n,),
 *   out[o, k, :] = p_k z[o, k, :] + q_k z[o, (n - k) mod n, :].
 * Work items are the (o, k) pairs. */
static void SFX(pair_map_task)(void *c_, int64_t i0, int64_t i1) {
    const sl_pair_ctx *c = (const sl_pair_ctx *)c_;
    const int64_t n = c->n, inner = c->inner;
    const T *p = (const T *)c->p, *q = (const T *)c->q;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t o = it / n, k = it % n, mirror = k ? n - k : 0;
        const T *restrict a = (const T *)c->z + 2 * (o * n + k) * inner;
        const T *restrict b = (const T *)c->z + 2 * (o * n + mirror) * inner;
        T *restrict y = (T *)c->out + 2 * (o * n + k) * inner;
        const T pr = p[2 * k], pi = p[2 * k + 1], qr = q[2 * k], qi = q[2 * k + 1];
        SL_IVDEP
        for (int64_t i = 0; i < inner; i++) {
            const T ar = a[2 * i], ai = a[2 * i + 1], br = b[2 * i], bi = b[2 * i + 1];
            y[2 * i] = pr * ar - pi * ai + qr * br - qi * bi;
            y[2 * i + 1] = pr * ai + pi * ar + qr * bi + qi * br;
        }
    }
}

SL_EXPORT void SFX(sl_pair_map)(const T *z, const T *p, const T *q, T *out, int64_t outer, int64_t n,
                                int64_t inner, int nthreads) {
    if (outer <= 0 || n <= 0 || inner <= 0) return;
    sl_pair_ctx c = {z, p, q, out, outer, n, inner};
    const int64_t items = outer * n;
    sl_parallel(SFX(pair_map_task), &c, items, sl_nthreads(nthreads, items * inner, items));
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

/* ---------------------------------------------------------------------- */
/* ACDC cascade, a chunk of W rows at a time ("lanes" layout)              */
/*                                                                          */
/* A chunk of W rows is held as n vectors: lane l of vector j is element j  */
/* of row l. Every step of a block is then the same operation on all lanes, */
/* so the FFT below is plain scalar-style code on vectors (twiddles are     */
/* broadcast), and a permutation moves whole vectors. A chunk runs through  */
/* all blocks while it sits in the L2 cache.                                */
/*                                                                          */
/* Real FFT of length n = 2m (m a power of two): the m complex values       */
/* z_j = v_2j + i v_2j+1 (vector 2j is the real part, 2j+1 the imaginary    */
/* part: the lanes layout of v is already this complex array) go through a  */
/* radix-4/2 decimation-in-frequency FFT that leaves Z in bit-reversed      */
/* order; the "middle" step forms the real spectrum X_k (k = 0..m) from the */
/* pair (Z_k, Z_m-k), applies the per-bin 2x2 map and forms the packed      */
/* spectrum of the inverse in the same slots; the decimation-in-time FFT    */
/* (the adjoint of the forward one) takes it back to natural order. No      */
/* bit-reversal permutation is ever run.                                    */
/*                                                                          */
/* Tables (built once per size by the caller, see transforms/acdc.py):      */
/*   tw[2t], tw[2t+1] = cos(2 pi t/m), -sin(2 pi t/m)   t < m               */
/*   tw[2m + 2p], tw[2m + 2p + 1] = cos, sin (2 pi br[p]/n)   p < m        */
/*   tw[4m + q], tw[5m + 1 + q], tw[6m + 2 + q] = cos^2, sin^2, cos sin of    */
/*     pi q / 2n, q <= m: the per-bin coefficients' trig (see acdc.py)      */
/*   br[k] = k with its log2(m) bits reversed                               */
/* ---------------------------------------------------------------------- */

#define SFX_SPLAT(lane, s) (s)
#define SFX_BC(s) ((V){LANES(SFX_SPLAT, (T)(s))}) /* broadcast (not {0} + s: 0 + s is no identity for s = -0) */
/* x where x >= 0 (NaN kept, as torch.relu), else 0 */
#define SFX_RELU(x) ((V)((VI)(x) & ~(VI)((x) < (V){0})))

/* In-register transpose of W vectors (row l of a W x W tile in v[l] -> column l in v[l]): log2(W) stages,
 * stage s swapping the off-diagonal s x s blocks of every 2s x 2s block. */
#define SFX_TA(t, s) (((t) & (s)) ? W + (t) - (s) : (t))
#define SFX_TB(t, s) (((t) & (s)) ? W + (t) : (t) + (s))
#define SFX_TSTAGE(s)                                                        \
    for (int i = 0; i < W; i++)                                              \
        if (!(i & (s))) {                                                    \
            const V a_ = v[i], b_ = v[i + (s)];                              \
            v[i] = SL_PERM2(a_, b_, VI, LANES(SFX_TA, s));                   \
            v[i + (s)] = SL_PERM2(a_, b_, VI, LANES(SFX_TB, s));             \
        }
SL_INLINE void SFX(transpose_w)(V *v) {
#if W >= 2
    SFX_TSTAGE(1)
#endif
#if W >= 4
    SFX_TSTAGE(2)
#endif
#if W >= 8
    SFX_TSTAGE(4)
#endif
#if W >= 16
    SFX_TSTAGE(8)
#endif
}
#undef SFX_TSTAGE

/* Rows l < nl of src (row stride ld, n_src columns) into the lanes layout: column c goes to buf[pos[c]]
 * (skipped where pos[c] < 0; pos NULL: buf[c]). Lanes nl .. W-1 are 0; with `full` unset, every vector of
 * buf (n of them) that no column reaches is 0 too (`full`: the columns reach all n). */
static void SFX(lanes_load)(V *restrict buf, const T *restrict src, int64_t ld, int64_t nl, int64_t n,
                            const int64_t *restrict pos, int64_t n_src, int full) {
    if (!full)
        for (int64_t j = 0; j < n; j++) buf[j] = (V){0};
    V v[W];
    int64_t c0 = 0;
    for (; c0 + W <= n_src; c0 += W) {
        for (int64_t l = 0; l < W; l++) v[l] = l < nl ? (V)*(const VU *)(src + l * ld + c0) : (V){0};
        SFX(transpose_w)(v);
        for (int64_t t = 0; t < W; t++) {
            const int64_t q = pos ? pos[c0 + t] : c0 + t;
            if (q >= 0) buf[q] = v[t];
        }
    }
    for (int64_t c = c0; c < n_src; c++) { /* the last columns, one at a time */
        const int64_t q = pos ? pos[c] : c;
        if (q < 0) continue;
        V x = (V){0};
        for (int64_t l = 0; l < nl; l++) x[l] = src[l * ld + c];
        buf[q] = x;
    }
}

/* dst[l * ld + j] = lane l of buf[idx[j]] (0 where idx[j] < 0; idx NULL: buf[j]), j < n_dst, rows l < nl. */
static void SFX(lanes_store)(T *restrict dst, int64_t ld, int64_t nl, const V *restrict buf, int64_t n_dst,
                             const int64_t *restrict idx) {
    V v[W];
    int64_t c0 = 0;
    for (; c0 + W <= n_dst; c0 += W) {
        for (int64_t t = 0; t < W; t++) {
            const int64_t q = idx ? idx[c0 + t] : c0 + t;
            v[t] = q >= 0 ? buf[q] : (V){0};
        }
        SFX(transpose_w)(v);
        for (int64_t l = 0; l < nl; l++) *(VU *)(dst + l * ld + c0) = v[l];
    }
    for (int64_t c = c0; c < n_dst; c++) {
        const int64_t q = idx ? idx[c] : c;
        const V x = q >= 0 ? buf[q] : (V){0};
        for (int64_t l = 0; l < nl; l++) dst[l * ld + c] = x[l];
    }
}

/* dst[j] = src[idx[j]] (through a ReLU with relu); dst and src distinct. */
static void SFX(lanes_gather)(V *restrict dst, const V *restrict src, const int64_t *restrict idx, int64_t n,
                              int relu) {
    if (relu) {
        for (int64_t j = 0; j < n; j++) {
            const V x = src[idx[j]];
            dst[j] = SFX_RELU(x);
        }
    } else {
        for (int64_t j = 0; j < n; j++) dst[j] = src[idx[j]];
    }
}

/* W vectors -> one: lane t of the result is the sum of the lanes of p[t] (a tree of two-input
 * shuffles; p is overwritten). */
#define SFX_RGRP(t, s) (((t) / (s)) % (W / (2 * (s))))
#define SFX_RSRC(t, s) (((t) / (s)) >= (W / (2 * (s))) ? W : 0)
#define SFX_RLO(t, s) (SFX_RSRC(t, s) + SFX_RGRP(t, s) * 2 * (s) + (t) % (s))
#define SFX_RHI(t, s) (SFX_RLO(t, s) + (s))
#define SFX_RLEVEL(s)                                                                              \
    for (int q = 0; q < (s); q++)                                                                  \
        p[q] = SL_PERM2(p[2 * q], p[2 * q + 1], VI, LANES(SFX_RLO, s)) +                          \
               SL_PERM2(p[2 * q], p[2 * q + 1], VI, LANES(SFX_RHI, s));
SL_INLINE V SFX(lane_sums_w)(V *p) {
#if W >= 16
    SFX_RLEVEL(8)
#endif
#if W >= 8
    SFX_RLEVEL(4)
#endif
#if W >= 4
    SFX_RLEVEL(2)
#endif
#if W >= 2
    SFX_RLEVEL(1)
#endif
    return p[0];
}
#undef SFX_RLEVEL

/* acc[q] += sum of the lanes of p[q], q < cnt. */
static void SFX(add_lane_sums)(T *restrict acc, const V *restrict p, int64_t cnt) {
    V t[W];
    for (int64_t q = 0; q < cnt; q += W) {
        const int64_t e = cnt - q < W ? cnt - q : W;
        for (int l = 0; l < W; l++) t[l] = l < e ? p[q + l] : (V){0};
        const V r = SFX(lane_sums_w)(t);
        if (e == W) {
            *(VU *)(acc + q) = *(const VU *)(acc + q) + r;
        } else {
            for (int64_t l = 0; l < e; l++) acc[q + l] += r[l];
        }
    }
}

/* acc[j] += sum over lanes of g[j] v[j]; then g[j] *= a[j], and 0 where v[j] <= 0 with mask: a block's
 * grad_A and input gradient (ReLU's gradient included) in one pass. */
static void SFX(colsum_scale_lanes)(V *restrict g, const V *restrict v, const T *restrict a, T *restrict acc,
                                    int64_t n, int mask) {
    V t[W];
    for (int64_t j0 = 0; j0 < n; j0 += W) {
        const int64_t e = n - j0 < W ? n - j0 : W;
        for (int l = 0; l < W; l++) {
            if (l >= e) {
                t[l] = (V){0};
                continue;
            }
            const V gv = g[j0 + l], vv = v[j0 + l], s = gv * SFX_BC(a[j0 + l]);
            t[l] = gv * vv;
            g[j0 + l] = mask ? (V)((VI)s & (VI)(vv > (V){0})) : s;
        }
        const V r = SFX(lane_sums_w)(t);
        if (e == W) {
            *(VU *)(acc + j0) = *(const VU *)(acc + j0) + r;
        } else {
            for (int64_t l = 0; l < e; l++) acc[j0 + l] += r[l];
        }
    }
}

/* Complex products with a table entry w = (wr, wi): u * w and u * conj(w). */
#define SFX_CMUL(ur, ui, wr, wi, outr, outi) \
    do { const V r_ = (ur) * (wr) - (ui) * (wi); outi = (ur) * (wi) + (ui) * (wr); outr = r_; } while (0)
#define SFX_CMULC(ur, ui, wr, wi, outr, outi) \
    do { const V r_ = (ur) * (wr) + (ui) * (wi); outi = (ui) * (wr) - (ur) * (wi); outr = r_; } while (0)

/* Load complex element q of src (scaled elementwise by sc[2q], sc[2q+1] when sc is given). */
#define SFX_LDC(src, sc, q, re, im)                                   \
    do {                                                              \
        re = (src)[2 * (q)];                                          \
        im = (src)[2 * (q) + 1];                                      \
        if (sc) {                                                     \
            re *= SFX_BC((sc)[2 * (q)]);                              \
            im *= SFX_BC((sc)[2 * (q) + 1]);                          \
        }                                                             \
    } while (0)

/* The passes below run on a sub-transform of ms complex vectors whose twiddles W_ms^j are the table's
 * W_m^(j * ts) (ts = m / ms). */

/* Radix-2 DIF pass at half-stride h over ms complex vectors (src -> d, same positions). */
static void SFX(dif2)(V *d, const V *src, const T *sc, int64_t ms, int64_t h, int64_t ts, const T *tw) {
    const int64_t step = ts * (ms / (2 * h));
    for (int64_t b = 0; b < ms; b += 2 * h)
        for (int64_t j = 0; j < h; j++) {
            const int64_t q = b + j;
            V ur, ui, vr, vi;
            SFX_LDC(src, sc, q, ur, ui);
            SFX_LDC(src, sc, q + h, vr, vi);
            d[2 * q] = ur + vr;
            d[2 * q + 1] = ui + vi;
            V xr = ur - vr, xi = ui - vi;
            if (j) {
                const T *w = tw + 2 * (j * step);
                SFX_CMUL(xr, xi, SFX_BC(w[0]), SFX_BC(w[1]), xr, xi);
            }
            d[2 * (q + h)] = xr;
            d[2 * (q + h) + 1] = xi;
        }
}

/* Radix-4 DIF pass at quarter-stride s: two radix-2 stages (strides 2s and s) with the outputs kept in the
 * bit-reversed order of the radix-2 network. */
static void SFX(dif4)(V *d, const V *src, const T *sc, int64_t ms, int64_t s, int64_t ts, const T *tw) {
    const int64_t step = ts * (ms / (4 * s));
    for (int64_t b = 0; b < ms; b += 4 * s)
        for (int64_t j = 0; j < s; j++) {
            const int64_t q = b + j;
            V x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i;
            SFX_LDC(src, sc, q, x0r, x0i);
            SFX_LDC(src, sc, q + s, x1r, x1i);
            SFX_LDC(src, sc, q + 2 * s, x2r, x2i);
            SFX_LDC(src, sc, q + 3 * s, x3r, x3i);
            const V t0r = x0r + x2r, t0i = x0i + x2i, t1r = x0r - x2r, t1i = x0i - x2i;
            const V t2r = x1r + x3r, t2i = x1i + x3i, dr = x1r - x3r, di = x1i - x3i;
            V ur = t0r - t2r, ui = t0i - t2i; /* to q + s, times W^2j */
            V vr = t1r + di, vi = t1i - dr;   /* to q + 2s, times W^j */
            V wr = t1r - di, wi = t1i + dr;   /* to q + 3s, times W^3j */
            if (j) {
                const T *w1 = tw + 2 * (j * step), *w2 = tw + 2 * (2 * j * step), *w3 = tw + 2 * (3 * j * step);
                SFX_CMUL(ur, ui, SFX_BC(w2[0]), SFX_BC(w2[1]), ur, ui);
                SFX_CMUL(vr, vi, SFX_BC(w1[0]), SFX_BC(w1[1]), vr, vi);
                SFX_CMUL(wr, wi, SFX_BC(w3[0]), SFX_BC(w3[1]), wr, wi);
            }
            d[2 * q] = t0r + t2r;
            d[2 * q + 1] = t0i + t2i;
            d[2 * (q + s)] = ur;
            d[2 * (q + s) + 1] = ui;
            d[2 * (q + 2 * s)] = vr;
            d[2 * (q + 2 * s) + 1] = vi;
            d[2 * (q + 3 * s)] = wr;
            d[2 * (q + 3 * s) + 1] = wi;
        }
}

/* Radix-2 DIT pass at half-stride h (the adjoint of dif2). */
static void SFX(dit2)(V *d, int64_t ms, int64_t h, int64_t ts, const T *tw) {
    const int64_t step = ts * (ms / (2 * h));
    for (int64_t b = 0; b < ms; b += 2 * h)
        for (int64_t j = 0; j < h; j++) {
            const int64_t q = b + j;
            const V ur = d[2 * q], ui = d[2 * q + 1];
            V vr = d[2 * (q + h)], vi = d[2 * (q + h) + 1];
            if (j) {
                const T *w = tw + 2 * (j * step);
                SFX_CMULC(vr, vi, SFX_BC(w[0]), SFX_BC(w[1]), vr, vi);
            }
            d[2 * q] = ur + vr;
            d[2 * q + 1] = ui + vi;
            d[2 * (q + h)] = ur - vr;
            d[2 * (q + h) + 1] = ui - vi;
        }
}

/* Radix-4 DIT pass at quarter-stride s (the adjoint of dif4). */
static void SFX(dit4)(V *d, int64_t ms, int64_t s, int64_t ts, const T *tw) {
    const int64_t step = ts * (ms / (4 * s));
    for (int64_t b = 0; b < ms; b += 4 * s)
        for (int64_t j = 0; j < s; j++) {
            const int64_t q = b + j;
            const V p0r = d[2 * q], p0i = d[2 * q + 1];
            V q1r = d[2 * (q + s)], q1i = d[2 * (q + s) + 1];
            V q2r = d[2 * (q + 2 * s)], q2i = d[2 * (q + 2 * s) + 1];
            V q3r = d[2 * (q + 3 * s)], q3i = d[2 * (q + 3 * s) + 1];
            if (j) {
                const T *w1 = tw + 2 * (j * step), *w2 = tw + 2 * (2 * j * step), *w3 = tw + 2 * (3 * j * step);
                SFX_CMULC(q1r, q1i, SFX_BC(w2[0]), SFX_BC(w2[1]), q1r, q1i);
                SFX_CMULC(q2r, q2i, SFX_BC(w1[0]), SFX_BC(w1[1]), q2r, q2i);
                SFX_CMULC(q3r, q3i, SFX_BC(w3[0]), SFX_BC(w3[1]), q3r, q3i);
            }
            const V b0r = p0r + q1r, b0i = p0i + q1i, b1r = p0r - q1r, b1i = p0i - q1i;
            const V cr = q2r + q3r, ci = q2i + q3i, er = q2r - q3r, ei = q2i - q3i;
            d[2 * q] = b0r + cr;
            d[2 * q + 1] = b0i + ci;
            d[2 * (q + 2 * s)] = b0r - cr;
            d[2 * (q + 2 * s) + 1] = b0i - ci;
            d[2 * (q + s)] = b1r - ei;
            d[2 * (q + s) + 1] = b1i + er;
            d[2 * (q + 3 * s)] = b1r + ei;
            d[2 * (q + 3 * s) + 1] = b1i - er;
        }
}

/* Radix-8 passes at eighth-stride s: the three radix-2 stages at strides 4s, 2s and s on 8 points held in
 * registers (same positions as three dif2 passes, so the same bit-reversed output). Stage twiddles, with
 * w = W_8s^j: w W_8^t (t < 4) at stride 4s, w^2 (-i)^t (t < 2) at 2s, w^4 at s. */
#define SFX_R2 ((T)0.70710678118654752440)
SL_INLINE void SFX(twiddles8)(const T *tw, int64_t j, int64_t step, T *wr, T *wi) {
    /* wr, wi [7]: w W_8^t for t < 4, then w^2 and w^2 (-i), then w^4 */
    T ar = 1, ai = 0, br = 1, bi = 0, cr = 1, ci = 0;
    if (j) {
        ar = tw[2 * (j * step)], ai = tw[2 * (j * step) + 1];
        br = tw[2 * (2 * j * step)], bi = tw[2 * (2 * j * step) + 1];
        cr = tw[2 * (4 * j * step)], ci = tw[2 * (4 * j * step) + 1];
    }
    const T e8r[4] = {1, SFX_R2, 0, -SFX_R2}, e8i[4] = {0, -SFX_R2, -1, -SFX_R2};
    for (int t = 0; t < 4; t++) {
        wr[t] = ar * e8r[t] - ai * e8i[t];
        wi[t] = ar * e8i[t] + ai * e8r[t];
    }
    wr[4] = br, wi[4] = bi, wr[5] = bi, wi[5] = -br, wr[6] = cr, wi[6] = ci;
}

static void SFX(dif8)(V *d, const V *src, const T *sc, int64_t ms, int64_t s, int64_t ts, const T *tw) {
    const int64_t step = ts * (ms / (8 * s));
    for (int64_t b = 0; b < ms; b += 8 * s)
        for (int64_t j = 0; j < s; j++) {
            const int64_t q = b + j;
            T wr[7], wi[7];
            SFX(twiddles8)(tw, j, step, wr, wi);
            V xr[8], xi[8];
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) SFX_LDC(src, sc, q + t * s, xr[t], xi[t]);
#define SFX_DIF_PAIR(u, v, cr, ci)                                  \
    do {                                                            \
        const V pr = xr[u] + xr[v], pi = xi[u] + xi[v];             \
        const V mr = xr[u] - xr[v], mi = xi[u] - xi[v];             \
        xr[u] = pr, xi[u] = pi;                                     \
        SFX_CMUL(mr, mi, SFX_BC(cr), SFX_BC(ci), xr[v], xi[v]);     \
    } while (0)
            SFX_DIF_PAIR(0, 4, wr[0], wi[0]);
            SFX_DIF_PAIR(1, 5, wr[1], wi[1]);
            SFX_DIF_PAIR(2, 6, wr[2], wi[2]);
            SFX_DIF_PAIR(3, 7, wr[3], wi[3]);
            SFX_DIF_PAIR(0, 2, wr[4], wi[4]);
            SFX_DIF_PAIR(1, 3, wr[5], wi[5]);
            SFX_DIF_PAIR(4, 6, wr[4], wi[4]);
            SFX_DIF_PAIR(5, 7, wr[5], wi[5]);
            SFX_DIF_PAIR(0, 1, wr[6], wi[6]);
            SFX_DIF_PAIR(2, 3, wr[6], wi[6]);
            SFX_DIF_PAIR(4, 5, wr[6], wi[6]);
            SFX_DIF_PAIR(6, 7, wr[6], wi[6]);
#undef SFX_DIF_PAIR
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                d[2 * (q + t * s)] = xr[t];
                d[2 * (q + t * s) + 1] = xi[t];
            }
        }
}

/* The adjoint of dif8: the stages in reverse order with conjugated twiddles. */
static void SFX(dit8)(V *d, int64_t ms, int64_t s, int64_t ts, const T *tw) {
    const int64_t step = ts * (ms / (8 * s));
    for (int64_t b = 0; b < ms; b += 8 * s)
        for (int64_t j = 0; j < s; j++) {
            const int64_t q = b + j;
            T wr[7], wi[7];
            SFX(twiddles8)(tw, j, step, wr, wi);
            V xr[8], xi[8];
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                xr[t] = d[2 * (q + t * s)];
                xi[t] = d[2 * (q + t * s) + 1];
            }
#define SFX_DIT_PAIR(u, v, cr, ci)                                  \
    do {                                                            \
        V vr, vi;                                                   \
        SFX_CMULC(xr[v], xi[v], SFX_BC(cr), SFX_BC(ci), vr, vi);    \
        const V ur = xr[u], ui = xi[u];                             \
        xr[u] = ur + vr, xi[u] = ui + vi;                           \
        xr[v] = ur - vr, xi[v] = ui - vi;                           \
    } while (0)
            SFX_DIT_PAIR(0, 1, wr[6], wi[6]);
            SFX_DIT_PAIR(2, 3, wr[6], wi[6]);
            SFX_DIT_PAIR(4, 5, wr[6], wi[6]);
            SFX_DIT_PAIR(6, 7, wr[6], wi[6]);
            SFX_DIT_PAIR(0, 2, wr[4], wi[4]);
            SFX_DIT_PAIR(1, 3, wr[5], wi[5]);
            SFX_DIT_PAIR(4, 6, wr[4], wi[4]);
            SFX_DIT_PAIR(5, 7, wr[5], wi[5]);
            SFX_DIT_PAIR(0, 4, wr[0], wi[0]);
            SFX_DIT_PAIR(1, 5, wr[1], wi[1]);
            SFX_DIT_PAIR(2, 6, wr[2], wi[2]);
            SFX_DIT_PAIR(3, 7, wr[3], wi[3]);
#undef SFX_DIT_PAIR
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                d[2 * (q + t * s)] = xr[t];
                d[2 * (q + t * s) + 1] = xi[t];
            }
        }
}
#undef SFX_R2

static int SFX(log2i)(int64_t m) {
    int L = 0;
    while (((int64_t)1 << L) < m) L++;
    return L;
}

/* Sub-transforms up to this many bytes run all their passes at once, in the L1 cache. */
#ifndef SL_FFT_L1_BYTES
#define SL_FFT_L1_BYTES 32768
#endif

/* Forward complex FFT of ms vectors (natural order in src, bit-reversed out in d; src may be d), the input
 * first scaled elementwise by sc (2 ms reals) when given. Depth first: a sub-transform larger than the L1
 * budget runs its first radix-4 (or radix-2) pass, then each part in turn. */
static void SFX(dif_rec)(V *d, const V *src, const T *sc, int64_t ms, int64_t ts, const T *tw) {
    const int L = SFX(log2i)(ms);
    if (L == 0) {
        V re, im;
        SFX_LDC(src, sc, 0, re, im);
        d[0] = re;
        d[1] = im;
        return;
    }
    if ((size_t)ms * 2 * sizeof(V) > SL_FFT_L1_BYTES) { /* one pass over the whole: radix 8 or 4 */
        const int64_t parts = (L & 1) ? 8 : 4, sub = ms / parts;
        if (L & 1)
            SFX(dif8)(d, src, sc, ms, sub, ts, tw);
        else
            SFX(dif4)(d, src, sc, ms, sub, ts, tw);
        for (int64_t p = 0; p < parts; p++) SFX(dif_rec)(d + 2 * p * sub, d + 2 * p * sub, NULL, sub, ts * parts, tw);
        return;
    }
    int64_t s = ms / 4;
    if (L & 1) { /* the odd stage: radix 8 first (radix 2 for ms = 2) */
        if (L == 1)
            SFX(dif2)(d, src, sc, ms, 1, ts, tw);
        else
            SFX(dif8)(d, src, sc, ms, ms / 8, ts, tw);
        src = d;
        sc = NULL;
        s = ms / 32;
    }
    for (; s >= 1; s /= 4) {
        SFX(dif4)(d, src, sc, ms, s, ts, tw);
        src = d;
        sc = NULL;
    }
}

/* Unnormalized inverse of dif_rec, in place: bit-reversed in, natural order out. */
static void SFX(dit_rec)(V *d, int64_t ms, int64_t ts, const T *tw) {
    const int L = SFX(log2i)(ms);
    if (L == 0) return;
    if ((size_t)ms * 2 * sizeof(V) > SL_FFT_L1_BYTES) {
        const int64_t parts = (L & 1) ? 8 : 4, sub = ms / parts;
        for (int64_t p = 0; p < parts; p++) SFX(dit_rec)(d + 2 * p * sub, sub, ts * parts, tw);
        if (L & 1)
            SFX(dit8)(d, ms, sub, ts, tw);
        else
            SFX(dit4)(d, ms, sub, ts, tw);
        return;
    }
    for (int64_t s = 1; 4 * s <= ((L & 1) ? ms / 8 : ms); s *= 4) SFX(dit4)(d, ms, s, ts, tw);
    if (L == 1)
        SFX(dit2)(d, ms, 1, ts, tw);
    else if (L & 1)
        SFX(dit8)(d, ms, ms / 8, ts, tw);
}

static void SFX(fft_dif)(V *d, const V *src, const T *sc, int64_t m, const T *tw) {
    SFX(dif_rec)(d, src, sc, m, 1, tw);
}
static void SFX(fft_dit)(V *d, int64_t m, const T *tw) { SFX(dit_rec)(d, m, 1, tw); }

enum { SFX(MID_MAP) = 1, SFX(MID_STORE) = 2, SFX(MID_SUMS) = 4, SFX(MID_FROM) = 8 };

/* The step between fft_dif and fft_dit, bin by bin in bit-reversed position order: slot p < m holds bin
 * br[p] (p = 0: bin 0), slot m bin m. In that order the bins k and m - k that share their inputs sit at
 * positions mirrored within each block [2^j, 2^(j+1)) (position 1 holds bin m/2, its own partner), so the
 * step walks each block from both ends. Per slot:
 *   X: the real spectrum of the packed signal in d, or read from `in` (2(m+1) vectors) with MID_FROM;
 *   MID_STORE: X to U (2(m+1) vectors); MID_SUMS: X_R in_R, X_R in_I + X_I in_R, X_I in_I to P (3 per slot);
 *   MID_MAP: Y = (c00 X_R + c01 X_I, c01 X_R + c11 X_I) with cf = (c00, c01, c11), m + 1 each by slot and
 *   already scaled by 1/n (cf NULL: Y = scale X), written back as the packed spectrum whose fft_dit is
 *   irfft(Y); the imaginary parts of Y_0 and Y_m are dropped, as irfft does. With `add` (n values, the
 *   same for every lane), add[j] is added to the packed value j written: fft_dit then gives irfft(Y) plus
 *   the signal whose packing `add` is (see packed_offsets).
 * wp[2p], wp[2p+1] = cos, sin (2 pi br[p] / n). */
SL_INLINE void SFX(middle_body)(V *restrict d, int64_t m, const T *restrict wp, const T *cf, T scale, int mode,
                                V *restrict U, const V *restrict in, V *restrict P, const T *restrict add) {
    const V half = SFX_BC(0.5), f = SFX_BC(cf ? 1 : scale);
#define SFX_ADD(j) (add ? SFX_BC(add[j]) : (V){0})
    const T *c00 = cf, *c01 = cf ? cf + (m + 1) : NULL, *c11 = cf ? cf + 2 * (m + 1) : NULL;
    /* bins 0 and m, both from Z_0 */
    {
        V x0, xm;
        if (mode & SFX(MID_FROM)) {
            x0 = in[0];
            xm = in[2 * m];
        } else {
            x0 = d[0] + d[1];
            xm = d[0] - d[1];
        }
        if (mode & SFX(MID_STORE)) {
            U[0] = x0;
            U[1] = (V){0};
            U[2 * m] = xm;
            U[2 * m + 1] = (V){0};
        }
        if (mode & SFX(MID_SUMS)) {
            P[0] = x0 * in[0];
            P[1] = x0 * in[1];
            P[2] = (V){0};
            P[3 * m] = xm * in[2 * m];
            P[3 * m + 1] = xm * in[2 * m + 1];
            P[3 * m + 2] = (V){0};
        }
        if (mode & SFX(MID_MAP)) {
            const V y0 = x0 * f * (cf ? SFX_BC(c00[0]) : SFX_BC(1)), ym = xm * f * (cf ? SFX_BC(c00[m]) : SFX_BC(1));
            d[0] = y0 + ym + SFX_ADD(0);
            d[1] = y0 - ym + SFX_ADD(1);
        }
    }
    for (int64_t lo0 = 1; lo0 < m; lo0 *= 2)
        for (int64_t pa = lo0, pb = 2 * lo0 - 1; pa <= pb; pa++, pb--) {
            const V c = SFX_BC(wp[2 * pa]), s = SFX_BC(wp[2 * pa + 1]);
            V xkr, xki, xmr, xmi;
            if (mode & SFX(MID_FROM)) {
                xkr = in[2 * pa];
                xki = in[2 * pa + 1];
                xmr = in[2 * pb];
                xmi = in[2 * pb + 1];
            } else {
                const V ar = d[2 * pa], ai = d[2 * pa + 1], b_r = d[2 * pb], b_i = d[2 * pb + 1];
                /* E = (A + conj B) / 2, O = (A - conj B) / 2i; X_k = E + w^k O, X_m-k = conj(E - w^k O) */
                const V er = (ar + b_r) * half, ei = (ai - b_i) * half;
                const V o_r = (ai + b_i) * half, oi = (b_r - ar) * half;
                const V wr = c * o_r + s * oi, wi = c * oi - s * o_r; /* w^k = c - i s */
                xkr = er + wr;
                xki = ei + wi;
                xmr = er - wr;
                xmi = wi - ei;
            }
            if (mode & SFX(MID_STORE)) {
                U[2 * pa] = xkr;
                U[2 * pa + 1] = xki;
                U[2 * pb] = xmr;
                U[2 * pb + 1] = xmi;
            }
            if (mode & SFX(MID_SUMS)) {
                const V ur = in[2 * pa], ui = in[2 * pa + 1];
                P[3 * pa] = xkr * ur;
                P[3 * pa + 1] = xkr * ui + xki * ur;
                P[3 * pa + 2] = xki * ui;
                if (pb != pa) {
                    const V vr = in[2 * pb], vi = in[2 * pb + 1];
                    P[3 * pb] = xmr * vr;
                    P[3 * pb + 1] = xmr * vi + xmi * vr;
                    P[3 * pb + 2] = xmi * vi;
                }
            }
            if (mode & SFX(MID_MAP)) {
                V ykr = xkr, yki = xki, ymr = xmr, ymi = xmi;
                if (cf) {
                    const V a0 = SFX_BC(c00[pa]), a1 = SFX_BC(c01[pa]), a2 = SFX_BC(c11[pa]);
                    const V b0 = SFX_BC(c00[pb]), b1 = SFX_BC(c01[pb]), b2 = SFX_BC(c11[pb]);
                    ykr = a0 * xkr + a1 * xki;
                    yki = a1 * xkr + a2 * xki;
                    ymr = b0 * xmr + b1 * xmi;
                    ymi = b1 * xmr + b2 * xmi;
                } else {
                    ykr *= f;
                    yki *= f;
                    ymr *= f;
                    ymi *= f;
                }
                /* E'' = Y_k + conj Y_m-k, O'' = (Y_k - conj Y_m-k) conj(w^k); Z_k = E'' + i O'',
                 * Z_m-k = conj E'' + i conj O'' (the factors 1/2 and 1/m of the inverse are in the 1/n) */
                const V Er = ykr + ymr, Ei = yki - ymi, Dr = ykr - ymr, Di = yki + ymi;
                const V Or = Dr * c - Di * s, Oi = Dr * s + Di * c;
                d[2 * pa] = Er - Oi + SFX_ADD(2 * pa);
                d[2 * pa + 1] = Ei + Or + SFX_ADD(2 * pa + 1);
                if (pb != pa) {
                    d[2 * pb] = Er + Oi + SFX_ADD(2 * pb);
                    d[2 * pb + 1] = Or - Ei + SFX_ADD(2 * pb + 1);
                }
            }
        }
#undef SFX_ADD
}

/* middle, compiled once without offsets (add NULL: no adds at all) and once with them. */
static void SFX(middle)(V *restrict d, int64_t m, const T *restrict wp, const T *cf, T scale, int mode,
                        V *restrict U, const V *restrict in, V *restrict P, const T *restrict add) {
    if (add)
        SFX(middle_body)(d, m, wp, cf, scale, mode, U, in, P, add);
    else
        SFX(middle_body)(d, m, wp, cf, scale, mode, U, in, P, NULL);
}

typedef struct {
    V *buf, *buf2; /* n vectors each */
    V *Vs, *Us;    /* backward: k block inputs (n vectors each), k spectra (2(m+1) vectors each) */
    V *P;          /* backward: 3(m+1) vectors of products for the coefficient sums */
} SFX(cascade_ws);

/* One block on a chunk: d = irfft(M_i rfft(a_i ⊙ src)) (src may be d; a = NULL: no scale) per the mode
 * flags of middle (without MID_MAP, d is left holding the forward spectrum's packing), plus block i's output
 * offset when `shifted` and the cascade has offsets. c->cf holds every block's coefficients by slot, scaled
 * (see cascade_parameters); c->shift the offsets' packings (see packed_offsets). */
static void SFX(cascade_block)(const sl_cascade_ctx *c, int64_t i, V *d, const V *src, const T *a, int mode,
                               V *U, const V *in, V *P, int shifted) {
    const int64_t n = c->n, m = n / 2;
    const T *tw = (const T *)c->tw;
    const T *add = shifted && c->shift ? (const T *)c->shift + i * n : NULL;
    SFX(fft_dif)(d, src, a, m, tw);
    SFX(middle)(d, m, tw + 2 * m, (const T *)c->cf + i * 3 * (m + 1), 1, mode, U, in, P, add);
    if (mode & SFX(MID_MAP)) SFX(fft_dit)(d, m, tw);
}

/* The k offsets b (k, n), Makhoul order, replaced in place by their packings: the values p with
 * fft_dit(p) = b, i.e. middle's MID_MAP (scale 1/n) of fft_dif(b), so that middle can add an offset to a
 * block's output while it writes the packed spectrum (no pass of its own). Returns 0, or -1 without memory. */
static int SFX(packed_offsets)(T *b, int64_t n, int64_t k, const T *tw) {
    const int64_t m = n / 2;
    V *buf = NULL;
    if (posix_memalign((void **)&buf, 64, sizeof(V) * (size_t)n) != 0) return -1;
    for (int64_t i = 0; i < k; i++) {
        T *bi = b + i * n;
        for (int64_t j = 0; j < n; j++) buf[j] = SFX_BC(bi[j]);
        SFX(fft_dif)(buf, buf, NULL, m, tw);
        SFX(middle)(buf, m, tw + 2 * m, NULL, (T)1 / (T)n, SFX(MID_MAP), NULL, NULL, NULL, NULL);
        for (int64_t j = 0; j < n; j++) bi[j] = buf[j][0];
    }
    free(buf);
    return 0;
}

/* Makhoul's order: element j of a reordered row is element makhoul(j) of the natural one. */
static int64_t SFX(makhoul)(int64_t j, int64_t n) { return 2 * j < n ? 2 * j : 2 * (n - 1 - j) + 1; }

/* The parameters as the blocks use them, from A and D (k, n) in natural order: a (k, n), A in Makhoul's
 * order, then the per-bin coefficients by slot (see middle), (k, 3, m + 1), times 1/n:
 *   m00 = c2 d1 + s2 d2,  m01 = cs (d1 - d2),  m11 = s2 d1 + c2 d2,   d1 = D[q], d2 = D[n - q] (D[0] for q = 0)
 * with c2, s2, cs = cos^2, sin^2, cos sin of pi q / 2n (the trig table at tw + 4m), then, with B (k, n)
 * the blocks' output offsets in natural order, B in Makhoul's order, packed (see packed_offsets). One
 * allocation, or NULL. */
static T *SFX(cascade_parameters)(const T *A, const T *D, const T *B, const T *tw, const int64_t *br, int64_t n,
                                  int64_t k) {
    const int64_t m = n / 2, bins = m + 1;
    const T *trig = tw + 4 * m;
    T *a = (T *)malloc(sizeof(T) * (size_t)(k * (n + 3 * bins + (B ? n : 0))));
    if (!a) return NULL;
    if (B) {
        T *b = a + k * (n + 3 * bins);
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < n; j++) b[i * n + j] = B[i * n + SFX(makhoul)(j, n)];
        if (SFX(packed_offsets)(b, n, k, tw) != 0) {
            free(a);
            return NULL;
        }
    }
    const T *c2 = trig, *s2 = trig + bins, *cs = trig + 2 * bins, scale = (T)1 / (T)n;
    for (int64_t i = 0; i < k; i++) {
        const T *Ai = A + i * n, *Di = D + i * n;
        T *ai = a + i * n, *cf = a + k * n + i * 3 * bins;
        for (int64_t j = 0; j < n; j++) ai[j] = Ai[SFX(makhoul)(j, n)];
        for (int64_t p = 0; p <= m; p++) {
            const int64_t q = p < m ? br[p] : m;
            const T d1 = Di[q], d2 = Di[q ? n - q : 0];
            cf[p] = (c2[q] * d1 + s2[q] * d2) * scale;
            cf[bins + p] = cs[q] * (d1 - d2) * scale;
            cf[2 * bins + p] = (s2[q] * d1 + c2[q] * d2) * scale;
        }
    }
    return a;
}

/* Rows [r0, r0 + W) of the forward cascade. */
static void SFX(cascade_forward_chunk)(const sl_cascade_ctx *c, int64_t r0, SFX(cascade_ws) *ws) {
    const int64_t n = c->n, k = c->k, nl = c->rows - r0 < W ? c->rows - r0 : W;
    const T *a = (const T *)c->a;
    V *buf = ws->buf, *other = ws->buf2;
    SFX(lanes_load)(buf, (const T *)c->x + r0 * c->n_in, c->n_in, nl, n, c->in_pos, c->n_in, c->in_full);
    for (int64_t i = 0; i < k; i++) {
        if (c->blocks && c->blocks[i]) SFX(lanes_store)((T *)(intptr_t)c->blocks[i] + r0 * n, n, nl, buf, n, NULL);
        SFX(cascade_block)(c, i, buf, buf, a + i * n, SFX(MID_MAP), NULL, NULL, NULL, 1);
        if (i == k - 1) break;
        if (c->perm) {
            SFX(lanes_gather)(other, buf, c->perm + i * n, n, c->relu);
            V *t = buf;
            buf = other;
            other = t;
        } else if (c->relu) {
            for (int64_t j = 0; j < n; j++) buf[j] = SFX_RELU(buf[j]);
        }
    }
    SFX(lanes_store)((T *)c->y + r0 * c->n_out, c->n_out, nl, buf, c->n_out, c->out_idx);
}

/* Rows [r0, r0 + W) of the backward: the block inputs and their spectra (recomputed from x, or read back
 * and transformed), then the blocks in reverse, adding to the gradient sums acc_a (k * n) and acc_s
 * (k * 3 * (m+1)), and the input gradient into c->y. */
static void SFX(cascade_backward_chunk)(const sl_cascade_ctx *c, int64_t r0, SFX(cascade_ws) *ws, T *acc_a,
                                       T *acc_s, T *acc_b) {
    const int64_t n = c->n, k = c->k, m = n / 2, bins = m + 1, nl = c->rows - r0 < W ? c->rows - r0 : W;
    const T *a = (const T *)c->a;
    V *buf = ws->buf, *other = ws->buf2;
    const int STORE = SFX(MID_STORE);
    if (!c->blocks) { /* recompute: every block input from x */
        SFX(lanes_load)(ws->Vs, (const T *)c->x + r0 * c->n_in, c->n_in, nl, n, c->in_pos, c->n_in, c->in_full);
        for (int64_t i = 0; i < k; i++) {
            V *v = ws->Vs + i * n, *U = ws->Us + i * 2 * bins;
            if (i == k - 1) {
                SFX(cascade_block)(c, i, buf, v, a + i * n, STORE, U, NULL, NULL, 0);
                break;
            }
            SFX(cascade_block)(c, i, buf, v, a + i * n, STORE | SFX(MID_MAP), U, NULL, NULL, 1);
            V *next = v + n;
            if (c->perm) {
                SFX(lanes_gather)(next, buf, c->perm + i * n, n, c->relu);
            } else {
                for (int64_t j = 0; j < n; j++) next[j] = c->relu ? SFX_RELU(buf[j]) : buf[j];
            }
        }
    } else { /* the saved block inputs */
        for (int64_t i = 0; i < k; i++) {
            V *v = ws->Vs + i * n;
            SFX(lanes_load)(v, (const T *)(intptr_t)c->blocks[i] + r0 * n, n, nl, n, NULL, n, 1);
            SFX(cascade_block)(c, i, buf, v, a + i * n, STORE, ws->Us + i * 2 * bins, NULL, NULL, 0);
        }
    }
    SFX(lanes_load)(buf, (const T *)c->g + r0 * c->n_out, c->n_out, nl, n, c->out_idx, c->n_out, c->out_full);
    for (int64_t i = k - 1; i >= 0; i--) {
        if (acc_b) SFX(add_lane_sums)(acc_b + i * n, buf, n); /* buf: the gradient of block i's output */
        SFX(cascade_block)(c, i, buf, buf, NULL, SFX(MID_MAP) | SFX(MID_SUMS), NULL, ws->Us + i * 2 * bins, ws->P,
                           0);
        SFX(add_lane_sums)(acc_s + i * 3 * bins, ws->P, 3 * bins);
        SFX(colsum_scale_lanes)(buf, ws->Vs + i * n, a + i * n, acc_a + i * n, n, c->relu && i > 0);
        if (i > 0 && c->perm_inv) {
            SFX(lanes_gather)(other, buf, c->perm_inv + (i - 1) * n, n, 0);
            V *t = buf;
            buf = other;
            other = t;
        }
    }
    SFX(lanes_store)((T *)c->y + r0 * c->n_in, c->n_in, nl, buf, c->n_in, c->in_pos);
}

/* Carve a chunk workspace out of one allocation. */
static SFX(cascade_ws) SFX(cascade_ws_at)(V *base, int64_t n, int64_t k, int backward) {
    const int64_t bins = n / 2 + 1;
    SFX(cascade_ws) ws = {base, base + n, NULL, NULL, NULL};
    if (backward) {
        ws.Vs = base + 2 * n;
        ws.Us = ws.Vs + k * n;
        ws.P = ws.Us + k * 2 * bins;
    }
    return ws;
}

static size_t SFX(cascade_ws_bytes)(int64_t n, int64_t k, int backward) {
    const int64_t bins = n / 2 + 1;
    return sizeof(V) * (size_t)(2 * n + (backward ? k * n + k * 2 * bins + 3 * bins : 0));
}

static void SFX(cascade_forward_task)(void *c_, int64_t w0, int64_t w1) {
    sl_cascade_ctx *c = (sl_cascade_ctx *)c_;
    for (int64_t w = w0; w < w1; w++) {
        int owned = 0;
        V *base = (V *)sl_workspace(SFX(cascade_ws_bytes)(c->n, c->k, 0), &owned);
        if (!base) continue; /* the other workers take its chunks; none at all is reported */
        SFX(cascade_ws) ws = SFX(cascade_ws_at)(base, c->n, c->k, 0);
        for (int64_t ch; (ch = sl_claim(c, c->nchunks)) >= 0;) {
            SFX(cascade_forward_chunk)(c, ch * W, &ws);
            __atomic_fetch_add(&c->done, 1, __ATOMIC_RELAXED);
        }
        if (owned) free(base);
    }
}

static void SFX(cascade_backward_task)(void *c_, int64_t w0, int64_t w1) {
    sl_cascade_ctx *c = (sl_cascade_ctx *)c_;
    const int64_t sums = c->k * (c->n + 3 * (c->n / 2 + 1)), per = sums + (c->shift ? c->k * c->n : 0);
    for (int64_t w = w0; w < w1; w++) {
        int owned = 0;
        V *base = (V *)sl_workspace(SFX(cascade_ws_bytes)(c->n, c->k, 1), &owned);
        if (!base) continue;
        SFX(cascade_ws) ws = SFX(cascade_ws_at)(base, c->n, c->k, 1);
        for (int64_t grp; (grp = sl_claim(c, c->groups)) >= 0;) {
            T *acc = (T *)c->acc + grp * per;
            const int64_t ch1 = (grp + 1) * c->per_group < c->nchunks ? (grp + 1) * c->per_group : c->nchunks;
            for (int64_t ch = grp * c->per_group; ch < ch1; ch++)
                SFX(cascade_backward_chunk)(c, ch * W, &ws, acc, acc + c->k * c->n, c->shift ? acc + sums : NULL);
            __atomic_fetch_add(&c->done, 1, __ATOMIC_RELAXED);
        }
        if (owned) free(base);
    }
}

/* Work (rows * depth * n * log2 n) below which a cascade runs on the calling thread alone (about 0.1 ms of a
 * forward here). A parallel region ends when every thread of its team has arrived, so on a busy machine a small
 * region can wait a whole scheduler time slice for a descheduled thread: more than the work itself. */
#ifndef SL_CASCADE_GRAIN
#define SL_CASCADE_GRAIN ((int64_t)1 << 21)
#endif

/* Workers for a cascade on `rows` rows: one per SL_CASCADE_GRAIN of work, at most nthreads or one per piece. */
static int SFX(cascade_threads)(int nthreads, int64_t rows, int64_t n, int64_t k, int64_t pieces) {
    int64_t t = rows * k * n * (SFX(log2i)(n) + 1) / SL_CASCADE_GRAIN;
    if (t > nthreads) t = nthreads;
    if (t > pieces) t = pieces;
    return t < 1 ? 1 : (int)t;
}

/* Whether the n_src columns given positions by pos (NULL: the identity) reach all n positions. */
static int SFX(reaches_all)(const int64_t *pos, int64_t n_src, int64_t n) {
    if (n_src < n) return 0;
    if (pos)
        for (int64_t c = 0; c < n_src; c++)
            if (pos[c] < 0) return 0;
    return n_src == n;
}

/* The whole cascade forward on rows x (rows, n_in) -> y (rows, n_out); see sl_cascade_ctx and acdc.py.
 * B: NULL, or (k, n) offsets added to each block's output (natural order).
 * kept: NULL, or k pointers (0 = skip) receiving each block's input, row-major (rows, n). Returns 0, or -1
 * when no workspace could be allocated. */
SL_EXPORT int SFX(sl_acdc_forward)(const T *x, const int64_t *in_pos, const T *A, const T *D, const T *B,
                                   const int64_t *perm, const int64_t *out_idx, const T *tw, const int64_t *br,
                                   const int64_t *kept, T *y, int64_t rows, int64_t n, int64_t k, int64_t n_in,
                                   int64_t n_out, int relu, int nthreads) {
    if (rows <= 0) return 0;
    T *a = SFX(cascade_parameters)(A, D, B, tw, br, n, k);
    if (!a) return -1;
    sl_cascade_ctx c = {.x = x, .tw = tw, .a = a, .cf = a + k * n, .in_pos = in_pos, .out_idx = out_idx,
                        .shift = B ? a + k * (n + 3 * (n / 2 + 1)) : NULL,
                        .perm = perm, .br = br, .blocks = kept, .y = y, .rows = rows, .n = n, .k = k, .n_in = n_in,
                        .n_out = n_out, .nchunks = (rows + W - 1) / W, .relu = relu,
                        .in_full = SFX(reaches_all)(in_pos, n_in, n), .out_full = 1};
    const int nt = SFX(cascade_threads)(nthreads, rows, n, k, c.nchunks);
    sl_parallel(SFX(cascade_forward_task), &c, nt, nt);
    free(a);
    return c.done == c.nchunks ? 0 : -1;
}

/* grad_A (k, n) in natural order and grad_D (k, n) from the sums over all rows of each block's grad_a
 * (Makhoul order) and per-slot coefficient products S (k, m + 1, 3): with the bin weights w_q (1/n for
 * q = 0 and m, 2/n otherwise) g_c = w_q S_c is the gradient of coefficient c of bin q, and through
 * m00 = c2 d1 + s2 d2, m01 = cs (d1 - d2), m11 = s2 d1 + c2 d2 it reaches d1 = D[q] and d2 = D[n - q]. */
static void SFX(cascade_gradients)(const T *grad_a, const T *S, const T *trig, const int64_t *br, int64_t n,
                                   int64_t k, T *grad_A, T *grad_D) {
    const int64_t m = n / 2, bins = m + 1;
    const T *c2 = trig, *s2 = trig + bins, *cs = trig + 2 * bins;
    for (int64_t i = 0; i < k; i++) {
        T *gA = grad_A + i * n, *gD = grad_D + i * n;
        for (int64_t j = 0; j < n; j++) gA[SFX(makhoul)(j, n)] = grad_a[i * n + j];
        for (int64_t j = 0; j < n; j++) gD[j] = 0;
        for (int64_t p = 0; p <= m; p++) {
            const int64_t q = p < m ? br[p] : m;
            const T w = (q == 0 || q == m) ? (T)1 / (T)n : (T)2 / (T)n;
            const T *Sp = S + (i * bins + p) * 3;
            const T g00 = w * Sp[0], g01 = w * Sp[1], g11 = w * Sp[2];
            gD[q] += c2[q] * g00 + cs[q] * g01 + s2[q] * g11;
            gD[q ? n - q : 0] += s2[q] * g00 - cs[q] * g01 + c2[q] * g11;
        }
    }
}

/* The whole cascade backward: from the output gradient g (rows, n_out) the input gradient grad_x
 * (rows, n_in) and the gradients of A and D (k, n), natural order (see acdc.py), and with the block output
 * offsets B (k, n; NULL: none) their gradient grad_B. blocks: NULL to recompute every block input from x,
 * else k pointers to the saved ones, row-major (rows, n). */
SL_EXPORT int SFX(sl_acdc_backward)(const T *g, const T *x, const int64_t *in_pos, const int64_t *out_idx,
                                    const int64_t *blocks, const T *A, const T *D, const T *B, const int64_t *perm,
                                    const int64_t *perm_inv, const T *tw, const int64_t *br, T *grad_x, T *grad_A,
                                    T *grad_D, T *grad_B, int64_t rows, int64_t n, int64_t k, int64_t n_in,
                                    int64_t n_out, int relu, int nthreads) {
    const int64_t m = n / 2, bins = m + 1, sums = k * (n + 3 * bins), per = sums + (B ? k * n : 0);
    /* the sums over all rows: grad_a (k, n), S (k, m + 1, 3), then the block output gradients (k, n) */
    T *acc = (T *)calloc((size_t)per, sizeof(T));
    if (!acc) return -1;
    int status = 0;
    if (rows > 0) {
        T *a = SFX(cascade_parameters)(A, D, B, tw, br, n, k);
        sl_cascade_ctx c = {.x = x, .g = g, .tw = tw, .a = a, .cf = a ? a + k * n : NULL, .in_pos = in_pos,
                            .shift = a && B ? a + sums : NULL,
                            .out_idx = out_idx, .perm = perm, .perm_inv = perm_inv, .br = br, .blocks = blocks,
                            .y = grad_x, .rows = rows, .n = n, .k = k, .n_in = n_in, .n_out = n_out,
                            .nchunks = (rows + W - 1) / W, .relu = relu,
                            .in_full = SFX(reaches_all)(in_pos, n_in, n),
                            .out_full = SFX(reaches_all)(out_idx, n_out, n)};
        const int nt = SFX(cascade_threads)(nthreads, rows, n, k, c.nchunks);
        /* groups of consecutive chunks, each with its own sums (added in group order: the same result whoever
         * ran which group); more groups than workers, so that a slow worker holds up a small part of the work */
        int64_t groups = nt > 1 ? 8 * (int64_t)nt : 1;
        if (groups > c.nchunks) groups = c.nchunks;
        c.per_group = (c.nchunks + groups - 1) / groups;
        c.groups = (c.nchunks + c.per_group - 1) / c.per_group;
        T *parts = a ? (T *)calloc((size_t)(c.groups * per), sizeof(T)) : NULL;
        if (parts) {
            c.acc = parts;
            sl_parallel(SFX(cascade_backward_task), &c, nt, nt);
            for (int64_t grp = 0; grp < c.groups; grp++) {
                const T *part = parts + grp * per;
                SL_IVDEP
                for (int64_t q = 0; q < per; q++) acc[q] += part[q];
            }
        }
        status = parts && c.done == c.groups ? 0 : -1;
        free(parts);
        free(a);
    }
    if (status == 0) {
        SFX(cascade_gradients)(acc, acc + k * n, tw + 4 * m, br, n, k, grad_A, grad_D);
        if (B)
            for (int64_t i = 0; i < k; i++)
                for (int64_t j = 0; j < n; j++) grad_B[i * n + SFX(makhoul)(j, n)] = acc[sums + i * n + j];
    }
    free(acc);
    return status;
}

/* rfft / irfft of the rows of x by the FFT above (for tests): x (rows, n) -> z (rows, n/2 + 1, 2), and back
 * (irfft drops the imaginary parts of bins 0 and n/2, as torch.fft.irfft does). */
typedef struct {
    const T *src, *tw;
    const int64_t *br;
    T *dst;
    int64_t rows, n;
    int inverse;
} SFX(fft_ctx);

static void SFX(fft_rows_task)(void *c_, int64_t ch0, int64_t ch1) {
    const SFX(fft_ctx) *c = (const SFX(fft_ctx) *)c_;
    const int64_t n = c->n, m = n / 2, bins = m + 1;
    V *buf = NULL, *spec = NULL;
    int64_t *slot = (int64_t *)malloc(sizeof(int64_t) * (size_t)(2 * bins)); /* column of a bin -> its slot */
    if (!slot || posix_memalign((void **)&buf, 64, sizeof(V) * (size_t)(n + 2 * bins)) != 0) {
        free(slot);
        return;
    }
    for (int64_t q = 0; q < bins; q++) {
        const int64_t p = q < m ? c->br[q] : m;
        slot[2 * q] = 2 * p;
        slot[2 * q + 1] = 2 * p + 1;
    }
    spec = buf + n;
    for (int64_t ch = ch0; ch < ch1; ch++) {
        const int64_t r0 = ch * W, nl = c->rows - r0 < W ? c->rows - r0 : W;
        if (!c->inverse) {
            SFX(lanes_load)(buf, c->src + r0 * n, n, nl, n, NULL, n, 1);
            SFX(fft_dif)(buf, buf, NULL, m, c->tw);
            SFX(middle)(buf, m, c->tw + 2 * m, NULL, 1, SFX(MID_STORE), spec, NULL, NULL, NULL);
            SFX(lanes_store)(c->dst + r0 * 2 * bins, 2 * bins, nl, spec, 2 * bins, slot);
        } else {
            SFX(lanes_load)(spec, c->src + r0 * 2 * bins, 2 * bins, nl, 2 * bins, slot, 2 * bins, 1);
            SFX(middle)(buf, m, c->tw + 2 * m, NULL, (T)1 / (T)n, SFX(MID_FROM) | SFX(MID_MAP), NULL, spec, NULL,
                        NULL);
            SFX(fft_dit)(buf, m, c->tw);
            SFX(lanes_store)(c->dst + r0 * n, n, nl, buf, n, NULL);
        }
    }
    free(slot);
    free(buf);
}

SL_EXPORT void SFX(sl_fft_real)(const T *src, T *dst, const T *tw, const int64_t *br, int64_t rows, int64_t n,
                                int inverse, int nthreads) {
    if (rows <= 0) return;
    SFX(fft_ctx) c = {src, tw, br, dst, rows, n, inverse};
    const int64_t chunks = (rows + W - 1) / W;
    sl_parallel(SFX(fft_rows_task), &c, chunks, sl_nthreads(nthreads, rows * n, chunks));
}

/* DCT-II and DCT-III of n = 2m vectors (n a power of two) by the FFT above, each lane its own signal; ab: (m + 1)
 * pairs (a, b) by slot (the twiddles of bin br[p] at slot p, bin m at slot m); spec: 2(m + 1) vectors.
 * dct_lanes: buf holds v (Makhoul's order) -> the DCT-II X (natural order), from the real spectrum of v by slot
 * (fft_dif and middle's MID_STORE):
 *   X[q] = a_q Re V_q + b_q Im V_q,   X[n - q] = b_q Re V_q - a_q Im V_q   (0 < q < m).
 * idct_lanes: buf holds X (natural order) -> v (Makhoul's order), through the half spectrum
 *   V_q = (a_q X_q + b_q X_{n-q}) + i (b_q X_q - a_q X_{n-q})   (X_n = 0)
 * by slot and its irfft (middle's MID_FROM | MID_MAP, scale 1/n, then fft_dit). */
static void SFX(dct_lanes)(V *restrict buf, V *restrict spec, const T *restrict ab, const T *tw,
                           const int64_t *restrict br, int64_t n) {
    const int64_t m = n / 2;
    SFX(fft_dif)(buf, buf, NULL, m, tw);
    SFX(middle)(buf, m, tw + 2 * m, NULL, 1, SFX(MID_STORE), spec, NULL, NULL, NULL);
    for (int64_t p = 0; p <= m; p++) {
        const int64_t q = p < m ? br[p] : m;
        const V a = SFX_BC(ab[2 * p]), b = SFX_BC(ab[2 * p + 1]), re = spec[2 * p], im = spec[2 * p + 1];
        buf[q] = a * re + b * im;
        if (q && q < m) buf[n - q] = b * re - a * im;
    }
}

static void SFX(idct_lanes)(V *restrict buf, V *restrict spec, const T *restrict ab, const T *tw,
                            const int64_t *restrict br, int64_t n) {
    const int64_t m = n / 2;
    for (int64_t p = 0; p <= m; p++) {
        const int64_t q = p < m ? br[p] : m;
        const V a = SFX_BC(ab[2 * p]), b = SFX_BC(ab[2 * p + 1]), x = buf[q];
        const V y = q ? buf[n - q] : (V){0};
        spec[2 * p] = a * x + b * y;
        spec[2 * p + 1] = b * x - a * y;
    }
    SFX(middle)(buf, m, tw + 2 * m, NULL, (T)1 / (T)n, SFX(MID_FROM) | SFX(MID_MAP), NULL, spec, NULL, NULL);
    SFX(fft_dit)(buf, m, tw);
}

/* The DCT-II (inverse = 0) or DCT-III (inverse = 1) along one dimension of length n = 2m (a power of two) of
 * src, seen as (outer, n, inner), into dst (which may be src): one pass per work item, whose n vectors sit in
 * the cache through the whole transform. pos[c]: column c's position in Makhoul's order. ab, tw, br: see
 * dct_lanes. inner = 1 (the last dimension): an item is a chunk of W rows, transposed into lanes on the way in
 * and out; inner > 1: an item is W consecutive positions of the inner dimensions at one outer index, each
 * vector j loaded from position j along the dimension as it lies in memory (the last item of an outer index
 * may be partial). The same function as the separate reorder, real FFT and twiddle passes. */
typedef struct {
    const T *src, *ab, *tw;
    const int64_t *br, *pos;
    T *dst;
    int64_t outer, n, inner, groups; /* groups: items per outer index */
    int inverse, failed;
} SFX(dct_dim_ctx);

static void SFX(dct_dim_task)(void *c_, int64_t i0, int64_t i1) {
    SFX(dct_dim_ctx) *c = (SFX(dct_dim_ctx) *)c_;
    const int64_t n = c->n, inner = c->inner;
    const int64_t *pos = c->pos;
    int owned = 0;
    V *buf = (V *)sl_workspace(sizeof(V) * (size_t)(n + 2 * (n / 2 + 1)), &owned);
    if (!buf) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    V *spec = buf + n;
    for (int64_t it = i0; it < i1; it++) {
        if (inner == 1) { /* rows r0 .. r0 + nl of (outer, n) */
            const int64_t r0 = it * W, nl = c->outer - r0 < W ? c->outer - r0 : W;
            SFX(lanes_load)(buf, c->src + r0 * n, n, nl, n, c->inverse ? NULL : pos, n, 1);
            if (c->inverse) {
                SFX(idct_lanes)(buf, spec, c->ab, c->tw, c->br, n);
                SFX(lanes_store)(c->dst + r0 * n, n, nl, buf, n, pos);
            } else {
                SFX(dct_lanes)(buf, spec, c->ab, c->tw, c->br, n);
                SFX(lanes_store)(c->dst + r0 * n, n, nl, buf, n, NULL);
            }
            continue;
        }
        const int64_t o = it / c->groups, i = (it % c->groups) * W, nl = inner - i < W ? inner - i : W;
        const T *src = c->src + o * n * inner + i;
        T *dst = c->dst + o * n * inner + i;
        for (int64_t j = 0; j < n; j++) { /* element j along the dimension to its place in the transform */
            const T *from = src + j * inner;
            V v = (V){0};
            if (nl == W)
                v = *(const VU *)from;
            else
                for (int64_t l = 0; l < nl; l++) v[l] = from[l];
            buf[c->inverse ? j : pos[j]] = v;
        }
        if (c->inverse)
            SFX(idct_lanes)(buf, spec, c->ab, c->tw, c->br, n);
        else
            SFX(dct_lanes)(buf, spec, c->ab, c->tw, c->br, n);
        for (int64_t j = 0; j < n; j++) {
            const V v = buf[c->inverse ? pos[j] : j];
            T *to = dst + j * inner;
            if (nl == W)
                *(VU *)to = v;
            else
                for (int64_t l = 0; l < nl; l++) to[l] = v[l];
        }
    }
    if (owned) free(buf);
}

SL_EXPORT int SFX(sl_dct_dim)(const T *src, T *dst, const T *ab, const T *tw, const int64_t *br, const int64_t *pos,
                              int64_t outer, int64_t n, int64_t inner, int inverse, int nthreads) {
    if (outer <= 0 || inner <= 0) return 0;
    const int64_t groups = inner == 1 ? 0 : (inner + W - 1) / W;
    const int64_t items = inner == 1 ? (outer + W - 1) / W : outer * groups;
    SFX(dct_dim_ctx) c = {src, ab, tw, br, pos, dst, outer, n, inner, groups, inverse, 0};
    sl_parallel(SFX(dct_dim_task), &c, items, sl_nthreads(nthreads, outer * n * inner, items));
    return c.failed ? -1 : 0;
}

#undef SFX_BC
#undef SFX_SPLAT
#undef SFX_RELU
#undef SFX_TA
#undef SFX_TB
#undef SFX_RGRP
#undef SFX_RSRC
#undef SFX_RLO
#undef SFX_RHI
#undef SFX_CMUL
#undef SFX_CMULC
#undef SFX_LDC

#endif /* SL_GENERIC */
