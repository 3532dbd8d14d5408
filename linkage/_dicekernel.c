/*
 * _dicekernel: the compiled popcount kernel behind linkage/similarity.py.
 *
 * Role in the pipeline: every comparison of two Bloom-filter encodings (online lookups,
 * blocked batch linkage, LSH candidate checks) ends here.  This module does only arithmetic
 * on buffers that the caller owns; it keeps no state besides the CPU path chosen once at
 * import time, and it performs no I/O.
 *
 * Data layout (the library-wide contract, restated): a packed Bloom filter of filter_bits
 * bits (a multiple of 64) is filter_bits / 64 little-endian 64-bit words; bit i lives in
 * word i / 64 at bit i % 64 (equivalently byte i / 8, bit i % 8, least significant bit
 * first).  A batch of n filters is one C-contiguous buffer of n * words unsigned 64-bit
 * integers, row-major, shape (n, words).
 *
 * Dice(a, b) = 2 * |a AND b| / (|a| + |b|), computed in double as
 * (double)(2 * and_count) / (double)(count_a + count_b); Dice of two all-zero filters is 0.0.
 * Both operands of the division are exact in double and IEEE division is correctly rounded,
 * so the result is bit-for-bit the one Python gives for 2 * and_count / (count_a + count_b).
 *
 * Threshold skipping: Dice(a, b) <= 2 * min(|a|, |b|) / (|a| + |b|).  For each query the
 * kernel computes, with the same double arithmetic, the interval of candidate popcounts for
 * which that bound reaches the threshold, and skips other candidates before the AND.  The
 * bound is monotone in the candidate popcount on each side of the query popcount, and
 * correctly rounded division is monotone, so a skipped pair can never have scored at or above
 * the threshold: results are identical with and without the skip.
 *
 * CPU paths (chosen at import, overridable per call for tests):
 *   0 "portable"          plain C (compiler builtin popcount or a SWAR fallback)
 *   1 "popcnt"            x86-64 POPCNT instruction, scalar, 16-word case unrolled
 *   2 "avx512-vpopcntdq"  AVX-512F + VPOPCNTDQ, 16-word case as two 512-bit loads per filter;
 *                         scan() takes eight candidates at a time (one transposing reduction
 *                         of their popcounts, one vector test against the threshold), skipping
 *                         a group of eight before the AND when no member can reach it
 * Every loop over filters runs with the GIL released.  Define JIGSAW_PORTABLE_ONLY to build
 * only the portable path (what non-x86-64 machines get), e.g. to check that it compiles.
 *
 * Functions (all buffers must be C-contiguous; shapes as named):
 *   kernel_name() -> str
 *   available_kernels() -> tuple[str, ...]
 *   popcounts(filters[n, words] u64, out[n] u32, kernel) -> None
 *   scan(queries[nq, words] u64, query_popcounts[nq] u32, candidates[nc, words] u64,
 *        candidate_popcounts[nc] u32, threshold, query_start, query_stop, candidate_start,
 *        candidate_stop, resume_block, resume_query, out_query[cap] i64,
 *        out_candidate[cap] i64, out_score[cap] f64, use_bound, kernel)
 *        -> (count, next_block, next_query)
 *      Writes every pair with score >= threshold in the given ranges, candidate-block by
 *      candidate-block (cache tiling), until the output buffers are full.  Call again with
 *      resume_block = next_block and resume_query = next_query while next_block <
 *      candidate_stop.  Start with resume_block = candidate_start, resume_query = query_start.
 *   pairs(left[nl, words] u64, left_popcounts[nl] u32, right[nr, words] u64,
 *         right_popcounts[nr] u32, left_idx[np] i64, right_idx[np] i64, start, stop,
 *         out[stop - start] f64, kernel) -> None
 *      out[k - start] = Dice(left[left_idx[k]], right[right_idx[k]]); raises IndexError
 *      naming the index argument if an index is out of range.
 *   diffuse(...), blip_mask(...): the hardening kernels of linkage/harden.py.
 *   hmac_words(key, data, offsets[n + 1] i64, blocks, counter, out[n, 8 * blocks] u32
 *              [, path])
 *      HMAC-SHA256 of many messages under one key, for the encoder's token hashing
 *      (linkage/encode.py): the digest bytes as little-endian 32-bit words.  SHA-256 runs on
 *      the x86 SHA extensions where the CPU has them, else portable C (path -1, the default,
 *      picks; tests pass each path of hmac_paths() by index: the digests are identical).
 *   hmac_paths() -> ((name, supported), ...)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(JIGSAW_PORTABLE_ONLY)
#define JIGSAW_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define JIGSAW_X86 0
#endif

enum { KERNEL_PORTABLE = 0, KERNEL_POPCNT = 1, KERNEL_AVX512 = 2, KERNEL_COUNT = 3 };

static const char *const kernel_names[KERNEL_COUNT] = {"portable", "popcnt", "avx512-vpopcntdq"};

/* Chosen once in module init from the CPU's features; read-only afterwards. */
static int best_kernel = KERNEL_PORTABLE;
static int kernel_supported[KERNEL_COUNT] = {1, 0, 0};

/* Bytes of candidate filters per cache tile in scan(). */
#define TILE_BYTES 262144
/* How many pairs ahead pairs() prefetches the two filters. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 16
#endif

#if defined(__GNUC__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

/* ---------------------------------------------------------------- popcount primitives */

static inline uint64_t popcount_portable(uint64_t word) {
#if defined(__GNUC__)
    return (uint64_t)__builtin_popcountll(word);
#else
    word = word - ((word >> 1) & 0x5555555555555555ULL);
    word = (word & 0x3333333333333333ULL) + ((word >> 2) & 0x3333333333333333ULL);
    word = (word + (word >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (word * 0x0101010101010101ULL) >> 56;
#endif
}

static inline uint64_t and_count_portable(const uint64_t *a, const uint64_t *b, Py_ssize_t words) {
    uint64_t total = 0;
    for (Py_ssize_t w = 0; w < words; w++) {
        total += popcount_portable(a[w] & b[w]);
    }
    return total;
}

static inline uint64_t count_portable(const uint64_t *a, Py_ssize_t words) {
    uint64_t total = 0;
    for (Py_ssize_t w = 0; w < words; w++) {
        total += popcount_portable(a[w]);
    }
    return total;
}

#if JIGSAW_X86
#define TARGET_POPCNT __attribute__((target("popcnt")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))

static inline TARGET_POPCNT uint64_t and_count_popcnt(const uint64_t *a, const uint64_t *b,
                                                      Py_ssize_t words) {
    uint64_t total = 0;
    for (Py_ssize_t w = 0; w < words; w++) {
        total += (uint64_t)__builtin_popcountll(a[w] & b[w]);
    }
    return total;
}

static inline TARGET_POPCNT uint64_t and_count_popcnt16(const uint64_t *a, const uint64_t *b) {
    uint64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    for (int w = 0; w < 16; w += 4) {
        t0 += (uint64_t)__builtin_popcountll(a[w] & b[w]);
        t1 += (uint64_t)__builtin_popcountll(a[w + 1] & b[w + 1]);
        t2 += (uint64_t)__builtin_popcountll(a[w + 2] & b[w + 2]);
        t3 += (uint64_t)__builtin_popcountll(a[w + 3] & b[w + 3]);
    }
    return (t0 + t1) + (t2 + t3);
}

static inline TARGET_POPCNT uint64_t count_popcnt(const uint64_t *a, Py_ssize_t words) {
    uint64_t total = 0;
    for (Py_ssize_t w = 0; w < words; w++) {
        total += (uint64_t)__builtin_popcountll(a[w]);
    }
    return total;
}

/* Any word count: full 8-word vectors, then one masked load for the tail. */
static inline TARGET_AVX512 uint64_t and_count_avx512(const uint64_t *a, const uint64_t *b,
                                                      Py_ssize_t words) {
    __m512i sum = _mm512_setzero_si512();
    Py_ssize_t w = 0;
    for (; w + 8 <= words; w += 8) {
        __m512i x = _mm512_and_si512(_mm512_loadu_si512((const void *)(a + w)),
                                     _mm512_loadu_si512((const void *)(b + w)));
        sum = _mm512_add_epi64(sum, _mm512_popcnt_epi64(x));
    }
    if (w < words) {
        __mmask8 mask = (__mmask8)((1u << (unsigned)(words - w)) - 1u);
        __m512i x = _mm512_and_si512(_mm512_maskz_loadu_epi64(mask, a + w),
                                     _mm512_maskz_loadu_epi64(mask, b + w));
        sum = _mm512_add_epi64(sum, _mm512_popcnt_epi64(x));
    }
    return (uint64_t)_mm512_reduce_add_epi64(sum);
}

static inline TARGET_AVX512 uint64_t count_avx512(const uint64_t *a, Py_ssize_t words) {
    return and_count_avx512(a, a, words);
}
#endif /* JIGSAW_X86 */

/* ---------------------------------------------------------------- Dice and bounds */

static inline double dice_from_counts(uint64_t and_count, uint64_t count_a, uint64_t count_b) {
    uint64_t denominator = count_a + count_b;
    if (denominator == 0) {
        return 0.0;
    }
    return (double)(2 * and_count) / (double)denominator;
}

static inline double dice_bound(uint64_t count_a, uint64_t count_b) {
    return dice_from_counts(count_a < count_b ? count_a : count_b, count_a, count_b);
}

/*
 * Interval [*low, *high] of candidate popcounts whose Dice bound against a query of popcount
 * query_count reaches threshold.  Empty when *low > *high.  The bound rises with the
 * candidate count up to query_count and falls after it, so two binary searches find the ends.
 */
static void feasible_interval(uint64_t query_count, uint64_t max_count, double threshold,
                              int use_bound, uint64_t *low, uint64_t *high) {
    if (!use_bound) {
        *low = 0;
        *high = UINT64_MAX;
        return;
    }
    if (query_count > max_count) {
        max_count = query_count;
    }
    if (query_count == 0) {
        /* Every bound is 0.0 (an empty filter shares no bits; two empty filters score 0.0). */
        if (0.0 >= threshold) {
            *low = 0;
            *high = UINT64_MAX;
        } else {
            *low = 1;
            *high = 0;
        }
        return;
    }
    if (!(1.0 >= threshold)) {
        /* The peak of the bound, at candidate count == query_count, is 1.0. */
        *low = 1;
        *high = 0;
        return;
    }
    /* Smallest count in [0, query_count] with bound >= threshold (query_count qualifies). */
    uint64_t lo = 0, hi = query_count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (dice_bound(query_count, mid) >= threshold) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    *low = lo;
    /* Largest count in [query_count, max_count] with bound >= threshold. */
    lo = query_count;
    hi = max_count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2;
        if (dice_bound(query_count, mid) >= threshold) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    /* Counts above max_count cannot occur in well-formed data; keep them decidable anyway. */
    *high = (lo == max_count) ? UINT64_MAX : lo;
}

/* ---------------------------------------------------------------- tile scanners */

typedef struct {
    const uint64_t *query;
    uint64_t query_count;
    int64_t query_index;
    const uint64_t *candidates;
    const uint32_t *candidate_counts;
    Py_ssize_t words;
    Py_ssize_t begin;
    Py_ssize_t end;
    uint64_t low;
    uint64_t high;
    double threshold;
    double threshold_floor;
    int64_t *out_query;
    int64_t *out_candidate;
    double *out_score;
} tile_args;

/* One query against candidates [begin, end): append pairs at or above threshold. */
#define SCAN_TILE_BODY(AND_COUNT_EXPR)                                                  \
    Py_ssize_t count = 0;                                                               \
    const Py_ssize_t words = args->words;                                               \
    (void)words;                                                                        \
    for (Py_ssize_t c = args->begin; c < args->end; c++) {                              \
        uint64_t candidate_count = args->candidate_counts[c];                           \
        if (candidate_count < args->low || candidate_count > args->high) {              \
            continue;                                                                   \
        }                                                                               \
        const uint64_t *candidate = args->candidates + (size_t)c * (size_t)words;       \
        uint64_t and_count = (AND_COUNT_EXPR);                                          \
        /* Cheap rejection without a division; see threshold_floor in scan(). */        \
        if ((double)(2 * and_count) <                                                   \
            args->threshold_floor * (double)(args->query_count + candidate_count)) {    \
            continue;                                                                   \
        }                                                                               \
        double score = dice_from_counts(and_count, args->query_count, candidate_count); \
        if (score >= args->threshold) {                                                 \
            args->out_query[count] = args->query_index;                                 \
            args->out_candidate[count] = (int64_t)c;                                    \
            args->out_score[count] = score;                                             \
            count++;                                                                    \
        }                                                                               \
    }                                                                                   \
    return count;

static Py_ssize_t scan_tile_portable(const tile_args *args) {
    SCAN_TILE_BODY(and_count_portable(args->query, candidate, words))
}

#if JIGSAW_X86
static TARGET_POPCNT Py_ssize_t scan_tile_popcnt(const tile_args *args) {
    if (args->words == 16) {
        SCAN_TILE_BODY(and_count_popcnt16(args->query, candidate))
    }
    SCAN_TILE_BODY(and_count_popcnt(args->query, candidate, words))
}

/* 16 words, one candidate at a time: the query stays in two registers. */
static TARGET_AVX512 Py_ssize_t scan_tile_avx512_16_single(const tile_args *args) {
    const __m512i query_low = _mm512_loadu_si512((const void *)args->query);
    const __m512i query_high = _mm512_loadu_si512((const void *)(args->query + 8));
    SCAN_TILE_BODY(((uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(
        _mm512_popcnt_epi64(
            _mm512_and_si512(query_low, _mm512_loadu_si512((const void *)candidate))),
        _mm512_popcnt_epi64(_mm512_and_si512(
            query_high, _mm512_loadu_si512((const void *)(candidate + 8))))))))
}

/* Per-lane popcount of (query AND candidate) for one 16-word candidate: 8 partial sums. */
static inline TARGET_AVX512 __m512i lane_counts_16(__m512i query_low, __m512i query_high,
                                                   const uint64_t *candidate) {
    return _mm512_add_epi64(
        _mm512_popcnt_epi64(
            _mm512_and_si512(query_low, _mm512_loadu_si512((const void *)candidate))),
        _mm512_popcnt_epi64(
            _mm512_and_si512(query_high, _mm512_loadu_si512((const void *)(candidate + 8)))));
}

/* Sum the 8 lanes of each of two vectors, in pairs: lane 2k holds a[2k] + a[2k+1] and lane
 * 2k+1 holds b[2k] + b[2k+1] (so each 128-bit chunk holds one partial of a and one of b). */
static inline TARGET_AVX512 __m512i fold_pair(__m512i a, __m512i b) {
    return _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

/* Add 128-bit chunks 0+1 and 2+3 of a, then of b: result chunks (a01, a23, b01, b23). */
static inline TARGET_AVX512 __m512i fold_chunks(__m512i a, __m512i b) {
    return _mm512_add_epi64(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

/*
 * 16 words (1024-bit filters, the main case), eight candidates at a time: the eight 8-lane
 * partial popcounts are summed by one transposing reduction (lane j of the result is the AND
 * count of candidate j), then one vector test rejects, without any division, the candidates
 * that cannot reach the threshold.  Survivors (usually none) get the exact scalar score.
 * A group of eight whose popcounts all rule out the threshold is skipped before any AND;
 * inside a group, popcount-infeasible candidates are masked out of the result.
 */
static TARGET_AVX512 Py_ssize_t scan_tile_avx512_16(const tile_args *args) {
    if (args->low > UINT32_MAX) {
        return 0;
    }
    const __m512i query_low = _mm512_loadu_si512((const void *)args->query);
    const __m512i query_high = _mm512_loadu_si512((const void *)(args->query + 8));
    const __m512i low = _mm512_set1_epi32((int)(uint32_t)args->low);
    const __m512i high =
        _mm512_set1_epi32((int)(uint32_t)(args->high > UINT32_MAX ? UINT32_MAX : args->high));
    const __m512i query_count = _mm512_set1_epi32((int)(uint32_t)args->query_count);
    const __m512d floor = _mm512_set1_pd(args->threshold_floor);
    const __m512d two = _mm512_set1_pd(2.0);
    Py_ssize_t count = 0;
    Py_ssize_t c = args->begin;
    for (; c + 8 <= args->end; c += 8) {
        const __m512i counts = _mm512_castsi256_si512(
            _mm256_loadu_si256((const __m256i *)(args->candidate_counts + c)));
        __mmask16 feasible = _mm512_mask_cmp_epu32_mask(0xFF, counts, low, _MM_CMPINT_NLT);
        feasible = _mm512_mask_cmp_epu32_mask(feasible, counts, high, _MM_CMPINT_LE);
        if (feasible == 0) {
            continue;
        }
        const uint64_t *candidate = args->candidates + (size_t)c * 16u;
        const __m512i and_counts = fold_chunks(
            fold_chunks(fold_pair(lane_counts_16(query_low, query_high, candidate),
                                  lane_counts_16(query_low, query_high, candidate + 16)),
                        fold_pair(lane_counts_16(query_low, query_high, candidate + 32),
                                  lane_counts_16(query_low, query_high, candidate + 48))),
            fold_chunks(fold_pair(lane_counts_16(query_low, query_high, candidate + 64),
                                  lane_counts_16(query_low, query_high, candidate + 80)),
                        fold_pair(lane_counts_16(query_low, query_high, candidate + 96),
                                  lane_counts_16(query_low, query_high, candidate + 112))));
        /* Counts are below 2**31, so the 32-bit conversions are exact. */
        const __m512d doubled =
            _mm512_mul_pd(two, _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(and_counts)));
        const __m512d denominators = _mm512_cvtepi32_pd(
            _mm512_castsi512_si256(_mm512_add_epi32(counts, query_count)));
        /* Same test as the scalar loop: reject when 2 * and < floor * denominator. */
        __mmask8 survivors = _mm512_mask_cmp_pd_mask((__mmask8)feasible, doubled,
                                                     _mm512_mul_pd(floor, denominators),
                                                     _CMP_NLT_UQ);
        if (survivors == 0) {
            continue;
        }
        uint64_t lanes[8];
        _mm512_storeu_si512((void *)lanes, and_counts);
        for (int lane = 0; lane < 8; lane++) {
            if (!(survivors & (1u << lane))) {
                continue;
            }
            uint64_t candidate_count = args->candidate_counts[c + lane];
            double score = dice_from_counts(lanes[lane], args->query_count, candidate_count);
            if (score >= args->threshold) {
                args->out_query[count] = args->query_index;
                args->out_candidate[count] = (int64_t)(c + lane);
                args->out_score[count] = score;
                count++;
            }
        }
    }
    if (c < args->end) {
        tile_args tail = *args;
        tail.begin = c;
        tail.out_query += count;
        tail.out_candidate += count;
        tail.out_score += count;
        count += scan_tile_avx512_16_single(&tail);
    }
    return count;
}

static TARGET_AVX512 Py_ssize_t scan_tile_avx512(const tile_args *args) {
    if (args->words == 16) {
        return scan_tile_avx512_16(args);
    }
    SCAN_TILE_BODY(and_count_avx512(args->query, candidate, words))
}
#endif

static Py_ssize_t scan_tile(int kernel, const tile_args *args) {
#if JIGSAW_X86
    if (kernel == KERNEL_AVX512) {
        return scan_tile_avx512(args);
    }
    if (kernel == KERNEL_POPCNT) {
        return scan_tile_popcnt(args);
    }
#endif
    (void)kernel;
    return scan_tile_portable(args);
}

/* ---------------------------------------------------------------- popcounts and pairs loops */

static void count_rows(int kernel, const uint64_t *filters, Py_ssize_t rows, Py_ssize_t words,
                       uint32_t *out) {
#if JIGSAW_X86
    if (kernel == KERNEL_AVX512) {
        for (Py_ssize_t r = 0; r < rows; r++) {
            out[r] = (uint32_t)count_avx512(filters + (size_t)r * (size_t)words, words);
        }
        return;
    }
    if (kernel == KERNEL_POPCNT) {
        for (Py_ssize_t r = 0; r < rows; r++) {
            out[r] = (uint32_t)count_popcnt(filters + (size_t)r * (size_t)words, words);
        }
        return;
    }
#endif
    (void)kernel;
    for (Py_ssize_t r = 0; r < rows; r++) {
        out[r] = (uint32_t)count_portable(filters + (size_t)r * (size_t)words, words);
    }
}

typedef struct {
    const uint64_t *left;
    const uint32_t *left_counts;
    Py_ssize_t left_rows;
    const uint64_t *right;
    const uint32_t *right_counts;
    Py_ssize_t right_rows;
    Py_ssize_t words;
    const int64_t *left_idx;
    const int64_t *right_idx;
    Py_ssize_t start;
    Py_ssize_t stop;
    double *out;
} pairs_args;

/* Returns -1 when all indices were valid, else the position of the first bad pair;
 * *bad_side is 0 for left_idx, 1 for right_idx. */
#define PAIRS_BODY(AND_COUNT_EXPR)                                                          \
    const Py_ssize_t words = args->words;                                                   \
    (void)words;                                                                            \
    const size_t line_words = 8;                                                            \
    for (Py_ssize_t k = args->start; k < args->stop; k++) {                                 \
        Py_ssize_t ahead = k + PREFETCH_AHEAD;                                              \
        if (ahead < args->stop) {                                                           \
            uint64_t la = (uint64_t)args->left_idx[ahead];                                  \
            uint64_t ra = (uint64_t)args->right_idx[ahead];                                 \
            if (la < (uint64_t)args->left_rows && ra < (uint64_t)args->right_rows) {        \
                const uint64_t *pl = args->left + (size_t)la * (size_t)words;               \
                const uint64_t *pr = args->right + (size_t)ra * (size_t)words;              \
                for (size_t off = 0; off < (size_t)words; off += line_words) {              \
                    PREFETCH(pl + off);                                                    \
                    PREFETCH(pr + off);                                                    \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        uint64_t li = (uint64_t)args->left_idx[k];                                          \
        uint64_t ri = (uint64_t)args->right_idx[k];                                         \
        if (li >= (uint64_t)args->left_rows) {                                              \
            *bad_side = 0;                                                                  \
            return k;                                                                       \
        }                                                                                   \
        if (ri >= (uint64_t)args->right_rows) {                                             \
            *bad_side = 1;                                                                  \
            return k;                                                                       \
        }                                                                                   \
        const uint64_t *a = args->left + (size_t)li * (size_t)words;                        \
        const uint64_t *b = args->right + (size_t)ri * (size_t)words;                       \
        uint64_t and_count = (AND_COUNT_EXPR);                                              \
        args->out[k - args->start] =                                                        \
            dice_from_counts(and_count, args->left_counts[li], args->right_counts[ri]);     \
    }                                                                                       \
    return -1;

static Py_ssize_t pairs_portable(const pairs_args *args, int *bad_side) {
    PAIRS_BODY(and_count_portable(a, b, words))
}

#if JIGSAW_X86
static TARGET_POPCNT Py_ssize_t pairs_popcnt(const pairs_args *args, int *bad_side) {
    if (args->words == 16) {
        PAIRS_BODY(and_count_popcnt16(a, b))
    }
    PAIRS_BODY(and_count_popcnt(a, b, words))
}

static TARGET_AVX512 Py_ssize_t pairs_avx512(const pairs_args *args, int *bad_side) {
    if (args->words == 16) {
        PAIRS_BODY(((uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(
            _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512((const void *)a),
                                                 _mm512_loadu_si512((const void *)b))),
            _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512((const void *)(a + 8)),
                                                 _mm512_loadu_si512((const void *)(b + 8))))))))
    }
    PAIRS_BODY(and_count_avx512(a, b, words))
}
#endif

static Py_ssize_t pairs_dispatch(int kernel, const pairs_args *args, int *bad_side) {
#if JIGSAW_X86
    if (kernel == KERNEL_AVX512) {
        return pairs_avx512(args, bad_side);
    }
    if (kernel == KERNEL_POPCNT) {
        return pairs_popcnt(args, bad_side);
    }
#endif
    (void)kernel;
    return pairs_portable(args, bad_side);
}

/* ---------------------------------------------------------------- buffer validation */

typedef enum { KIND_U64, KIND_U32, KIND_I64, KIND_F64 } buffer_kind;

static const char *kind_label(buffer_kind kind) {
    switch (kind) {
    case KIND_U64:
        return "uint64";
    case KIND_U32:
        return "uint32";
    case KIND_I64:
        return "int64";
    default:
        return "float64";
    }
}

static int format_matches(const char *format, buffer_kind kind, Py_ssize_t itemsize) {
    if (format == NULL) {
        format = "B";
    }
    if (format[0] == '@' || format[0] == '=') {
        format++;
    } else if (format[0] == '<') {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        format++;
#else
        return 0;
#endif
    }
    if (format[0] == '\0' || format[1] != '\0') {
        return 0;
    }
    switch (kind) {
    case KIND_U64:
        return itemsize == 8 && (format[0] == 'Q' || format[0] == 'L');
    case KIND_U32:
        return itemsize == 4 && (format[0] == 'I' || format[0] == 'L');
    case KIND_I64:
        return itemsize == 8 && (format[0] == 'q' || format[0] == 'l');
    default:
        return itemsize == 8 && format[0] == 'd';
    }
}

/*
 * Acquire a C-contiguous buffer of the given kind and number of dimensions.
 * On failure sets TypeError (not a buffer) or ValueError (wrong format, shape or layout),
 * naming the argument, and returns 0 with nothing held.
 */
static int acquire(PyObject *object, Py_buffer *view, const char *name, buffer_kind kind,
                   int ndim, int writable) {
    if (!PyObject_CheckBuffer(object)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a %s buffer, got %s", name, kind_label(kind),
                     Py_TYPE(object)->tp_name);
        return 0;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous%s %s buffer", name,
                     writable ? " writable" : "", kind_label(kind));
        return 0;
    }
    if (!format_matches(view->format, kind, view->itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %s items, got format '%s'", name,
                     kind_label(kind), view->format ? view->format : "B");
        PyBuffer_Release(view);
        return 0;
    }
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimension(s), got %d", name, ndim,
                     view->ndim);
        PyBuffer_Release(view);
        return 0;
    }
    if (ndim == 2 && view->shape[1] < 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected at least one 64-bit word per filter",
                     name);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static Py_ssize_t rows_of(const Py_buffer *view) { return view->ndim == 0 ? 1 : view->shape[0]; }

static int parse_kernel(int kernel) {
    if (kernel < 0 || kernel >= KERNEL_COUNT || !kernel_supported[kernel]) {
        PyErr_Format(PyExc_ValueError, "kernel: expected a supported kernel id, got %d", kernel);
        return 0;
    }
    return 1;
}

static void release_all(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) {
        PyBuffer_Release(&views[i]);
    }
}

/* ---------------------------------------------------------------- Python entry points */

static PyObject *py_kernel_name(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(kernel_names[best_kernel]);
}

static PyObject *py_available_kernels(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *result = PyList_New(0);
    if (result == NULL) {
        return NULL;
    }
    for (int k = 0; k < KERNEL_COUNT; k++) {
        if (!kernel_supported[k]) {
            continue;
        }
        PyObject *name = PyUnicode_FromString(kernel_names[k]);
        if (name == NULL || PyList_Append(result, name) != 0) {
            Py_XDECREF(name);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *tuple = PyList_AsTuple(result);
    Py_DECREF(result);
    return tuple;
}

static PyObject *py_popcounts(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *filters_object, *out_object;
    int kernel;
    if (!PyArg_ParseTuple(args, "OOi", &filters_object, &out_object, &kernel)) {
        return NULL;
    }
    if (!parse_kernel(kernel)) {
        return NULL;
    }
    Py_buffer views[2];
    if (!acquire(filters_object, &views[0], "filters", KIND_U64, 2, 0)) {
        return NULL;
    }
    if (!acquire(out_object, &views[1], "out", KIND_U32, 1, 1)) {
        release_all(views, 1);
        return NULL;
    }
    Py_ssize_t rows = views[0].shape[0];
    Py_ssize_t words = views[0].shape[1];
    if (rows_of(&views[1]) != rows) {
        release_all(views, 2);
        PyErr_SetString(PyExc_ValueError, "out: expected one entry per filter");
        return NULL;
    }
    if ((uint64_t)words * 64u > UINT32_MAX) {
        release_all(views, 2);
        PyErr_SetString(PyExc_ValueError, "filters: expected fewer than 2**32 bits per filter");
        return NULL;
    }
    const uint64_t *filters = (const uint64_t *)views[0].buf;
    uint32_t *out = (uint32_t *)views[1].buf;
    Py_BEGIN_ALLOW_THREADS
    count_rows(kernel, filters, rows, words, out);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

static PyObject *py_scan(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objects[7];
    double threshold;
    Py_ssize_t query_start, query_stop, candidate_start, candidate_stop, resume_block,
        resume_query;
    int use_bound, kernel;
    if (!PyArg_ParseTuple(args, "OOOOdnnnnnnOOOpi", &objects[0], &objects[1], &objects[2],
                          &objects[3], &threshold, &query_start, &query_stop, &candidate_start,
                          &candidate_stop, &resume_block, &resume_query, &objects[4],
                          &objects[5], &objects[6], &use_bound, &kernel)) {
        return NULL;
    }
    if (!parse_kernel(kernel)) {
        return NULL;
    }
    if (threshold != threshold) {
        PyErr_SetString(PyExc_ValueError, "threshold: expected a number, got NaN");
        return NULL;
    }
    static const char *const names[7] = {"queries",       "query_popcounts", "candidates",
                                         "candidate_popcounts", "out_query", "out_candidate",
                                         "out_score"};
    static const buffer_kind kinds[7] = {KIND_U64, KIND_U32, KIND_U64, KIND_U32,
                                         KIND_I64, KIND_I64, KIND_F64};
    static const int ndims[7] = {2, 1, 2, 1, 1, 1, 1};
    static const int writables[7] = {0, 0, 0, 0, 1, 1, 1};
    Py_buffer views[7];
    for (int i = 0; i < 7; i++) {
        if (!acquire(objects[i], &views[i], names[i], kinds[i], ndims[i], writables[i])) {
            release_all(views, i);
            return NULL;
        }
    }
    const char *problem = NULL;
    Py_ssize_t query_rows = views[0].shape[0];
    Py_ssize_t words = views[0].shape[1];
    Py_ssize_t candidate_rows = views[2].shape[0];
    Py_ssize_t capacity = views[4].shape[0];
    if (views[2].shape[1] != words) {
        problem = "candidates: expected the same number of words per filter as queries";
    } else if (views[1].shape[0] != query_rows) {
        problem = "query_popcounts: expected one entry per query";
    } else if (views[3].shape[0] != candidate_rows) {
        problem = "candidate_popcounts: expected one entry per candidate";
    } else if (views[5].shape[0] != capacity || views[6].shape[0] != capacity) {
        problem = "out_query, out_candidate, out_score: expected equal lengths";
    } else if (capacity < 1) {
        problem = "out_score: expected room for at least one pair";
    } else if (query_start < 0 || query_stop > query_rows || query_start > query_stop) {
        problem = "query_start, query_stop: expected a range within the queries";
    } else if (candidate_start < 0 || candidate_stop > candidate_rows ||
               candidate_start > candidate_stop) {
        problem = "candidate_start, candidate_stop: expected a range within the candidates";
    } else if (resume_block < candidate_start || resume_block > candidate_stop ||
               resume_query < query_start || resume_query > query_stop) {
        problem = "resume_block, resume_query: expected a position inside the ranges";
    }
    if (problem != NULL) {
        release_all(views, 7);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }

    const uint64_t *queries = (const uint64_t *)views[0].buf;
    const uint32_t *query_counts = (const uint32_t *)views[1].buf;
    Py_ssize_t tile = TILE_BYTES / (words * 8);
    if (tile < 1) {
        tile = 1;
    }
    if (tile > capacity) {
        tile = capacity;
    }
    uint64_t max_count = (uint64_t)words * 64u;
    tile_args tile_state;
    tile_state.candidates = (const uint64_t *)views[2].buf;
    tile_state.candidate_counts = (const uint32_t *)views[3].buf;
    tile_state.words = words;
    tile_state.threshold = threshold;
    /*
     * Rejection test without a division: if 2 * and_count < threshold_floor * denominator
     * (as computed in double), the exact quotient 2 * and_count / denominator lies below the
     * threshold by a relative margin of about 1e-12, far more than the few units of 2**-53 that
     * the rounding of the product and of the final division can move it, so the exact score
     * is below the threshold too.  Pairs that pass go on to the exact division and comparison.
     */
    tile_state.threshold_floor = threshold > 0.0 ? threshold * (1.0 - 1e-12) : 0.0;
    int64_t *out_query = (int64_t *)views[4].buf;
    int64_t *out_candidate = (int64_t *)views[5].buf;
    double *out_score = (double *)views[6].buf;
    Py_ssize_t count = 0;
    Py_ssize_t block = resume_block;
    Py_ssize_t query = resume_query;

    Py_BEGIN_ALLOW_THREADS
    for (; block < candidate_stop; block += tile) {
        Py_ssize_t block_end = block + tile < candidate_stop ? block + tile : candidate_stop;
        for (; query < query_stop; query++) {
            if (capacity - count < block_end - block) {
                goto full;
            }
            tile_state.query = queries + (size_t)query * (size_t)words;
            tile_state.query_count = query_counts[query];
            tile_state.query_index = (int64_t)query;
            tile_state.begin = block;
            tile_state.end = block_end;
            feasible_interval(tile_state.query_count, max_count, threshold, use_bound,
                              &tile_state.low, &tile_state.high);
            if (tile_state.low > tile_state.high) {
                continue;
            }
            tile_state.out_query = out_query + count;
            tile_state.out_candidate = out_candidate + count;
            tile_state.out_score = out_score + count;
            count += scan_tile(kernel, &tile_state);
        }
        query = query_start;
    }
    /* Finished: report the end position. */
    block = candidate_stop;
    query = query_start;
full:;
    Py_END_ALLOW_THREADS
    release_all(views, 7);
    return Py_BuildValue("(nnn)", count, block, query);
}

static PyObject *py_pairs(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objects[7];
    Py_ssize_t start, stop;
    int kernel;
    if (!PyArg_ParseTuple(args, "OOOOOOnnOi", &objects[0], &objects[1], &objects[2],
                          &objects[3], &objects[4], &objects[5], &start, &stop, &objects[6],
                          &kernel)) {
        return NULL;
    }
    if (!parse_kernel(kernel)) {
        return NULL;
    }
    static const char *const names[7] = {"left",     "left_popcounts", "right", "right_popcounts",
                                         "left_idx", "right_idx",      "out"};
    static const buffer_kind kinds[7] = {KIND_U64, KIND_U32, KIND_U64, KIND_U32,
                                         KIND_I64, KIND_I64, KIND_F64};
    static const int ndims[7] = {2, 1, 2, 1, 1, 1, 1};
    static const int writables[7] = {0, 0, 0, 0, 0, 0, 1};
    Py_buffer views[7];
    for (int i = 0; i < 7; i++) {
        if (!acquire(objects[i], &views[i], names[i], kinds[i], ndims[i], writables[i])) {
            release_all(views, i);
            return NULL;
        }
    }
    const char *problem = NULL;
    Py_ssize_t words = views[0].shape[1];
    Py_ssize_t pair_count = views[4].shape[0];
    if (views[2].shape[1] != words) {
        problem = "right: expected the same number of words per filter as left";
    } else if (views[1].shape[0] != views[0].shape[0]) {
        problem = "left_popcounts: expected one entry per left filter";
    } else if (views[3].shape[0] != views[2].shape[0]) {
        problem = "right_popcounts: expected one entry per right filter";
    } else if (views[5].shape[0] != pair_count) {
        problem = "right_idx: expected the same length as left_idx";
    } else if (start < 0 || stop > pair_count || start > stop) {
        problem = "start, stop: expected a range within the pairs";
    } else if (views[6].shape[0] != stop - start) {
        problem = "out: expected one entry per pair in the range";
    }
    if (problem != NULL) {
        release_all(views, 7);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    pairs_args state;
    state.left = (const uint64_t *)views[0].buf;
    state.left_counts = (const uint32_t *)views[1].buf;
    state.left_rows = views[0].shape[0];
    state.right = (const uint64_t *)views[2].buf;
    state.right_counts = (const uint32_t *)views[3].buf;
    state.right_rows = views[2].shape[0];
    state.words = words;
    state.left_idx = (const int64_t *)views[4].buf;
    state.right_idx = (const int64_t *)views[5].buf;
    state.start = start;
    state.stop = stop;
    state.out = (double *)views[6].buf;
    int bad_side = 0;
    Py_ssize_t bad_position;
    Py_BEGIN_ALLOW_THREADS
    bad_position = pairs_dispatch(kernel, &state, &bad_side);
    Py_END_ALLOW_THREADS
    release_all(views, 7);
    if (bad_position >= 0) {
        PyErr_Format(PyExc_IndexError, "%s: entry at position %zd is outside [0, %zd)",
                     bad_side == 0 ? "left_idx" : "right_idx", bad_position,
                     bad_side == 0 ? state.left_rows : state.right_rows);
        return NULL;
    }
    Py_RETURN_NONE;
}

/*
 * diffuse(filters, table, out): keyed diffusion of packed filters (linkage.harden.diffuse).
 * filters (rows, in_words) uint64; table (out_bits, t) int64 of input bit positions, each in
 * [0, 64 * in_words); out (rows, out_bits / 64) uint64, written. Output bit j of a row is the
 * XOR of its input bits table[j, 0..t-1]; bit i of a filter is bit i % 64 of word i / 64.
 */
static PyObject *py_diffuse(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *filters_object, *table_object, *out_object;
    if (!PyArg_ParseTuple(args, "OOO", &filters_object, &table_object, &out_object)) {
        return NULL;
    }
    Py_buffer views[3];
    if (!acquire(filters_object, &views[0], "filters", KIND_U64, 2, 0)) {
        return NULL;
    }
    if (!acquire(table_object, &views[1], "table", KIND_I64, 2, 0)) {
        release_all(views, 1);
        return NULL;
    }
    if (!acquire(out_object, &views[2], "out", KIND_U64, 2, 1)) {
        release_all(views, 2);
        return NULL;
    }
    Py_ssize_t rows = views[0].shape[0];
    Py_ssize_t in_words = views[0].shape[1];
    Py_ssize_t out_bits = views[1].shape[0];
    Py_ssize_t t = views[1].shape[1];
    Py_ssize_t out_words = views[2].shape[1];
    if (views[2].shape[0] != rows || out_words * 64 != out_bits) {
        release_all(views, 3);
        PyErr_SetString(PyExc_ValueError,
                        "out: expected one row per filter and table rows / 64 words");
        return NULL;
    }
    const int64_t *table = (const int64_t *)views[1].buf;
    for (Py_ssize_t k = 0; k < out_bits * t; k++) {
        if (table[k] < 0 || table[k] >= in_words * 64) {
            release_all(views, 3);
            PyErr_SetString(PyExc_ValueError, "table: expected input bit positions");
            return NULL;
        }
    }
    const uint64_t *filters = (const uint64_t *)views[0].buf;
    uint64_t *out = (uint64_t *)views[2].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint64_t *in_row = filters + r * in_words;
        uint64_t *out_row = out + r * out_words;
        const int64_t *entry = table;
        for (Py_ssize_t w = 0; w < out_words; w++) {
            uint64_t word = 0;
            for (int b = 0; b < 64; b++) {
                uint64_t bit = 0;
                for (Py_ssize_t k = 0; k < t; k++) {
                    int64_t position = entry[k];
                    bit ^= in_row[position >> 6] >> (position & 63);
                }
                word |= (bit & 1u) << b;
                entry += t;
            }
            out_row[w] = word;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 3);
    Py_RETURN_NONE;
}

/*
 * blip_mask(seeds, threshold, out): the BLIP flip mask of linkage.harden.blip_flip_mask.
 * seeds (rows,) uint64 (one keyed seed per row); out (rows, words) uint64, written. Random
 * word c (c = 1, 2, ...) of a row is splitmix64_mix(seed + c * 0x9E3779B97F4A7C15); its four
 * 16-bit lanes, lowest first, decide bits 4 (c - 1) .. 4 (c - 1) + 3: a bit flips when its lane
 * is below threshold.
 */
static PyObject *py_blip_mask(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seeds_object, *out_object;
    unsigned long long threshold;
    if (!PyArg_ParseTuple(args, "OKO", &seeds_object, &threshold, &out_object)) {
        return NULL;
    }
    Py_buffer views[2];
    if (!acquire(seeds_object, &views[0], "seeds", KIND_U64, 1, 0)) {
        return NULL;
    }
    if (!acquire(out_object, &views[1], "out", KIND_U64, 2, 1)) {
        release_all(views, 1);
        return NULL;
    }
    Py_ssize_t rows = views[0].shape[0];
    Py_ssize_t words = views[1].shape[1];
    if (views[1].shape[0] != rows) {
        release_all(views, 2);
        PyErr_SetString(PyExc_ValueError, "out: expected one row per seed");
        return NULL;
    }
    const uint64_t *seeds = (const uint64_t *)views[0].buf;
    uint64_t *out = (uint64_t *)views[1].buf;
    const uint64_t gamma = 0x9E3779B97F4A7C15ull;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        uint64_t counter = 0;
        for (Py_ssize_t w = 0; w < words; w++) {
            uint64_t word = 0;
            for (int j = 0; j < 16; j++) {
                counter++;
                uint64_t z = seeds[r] + counter * gamma;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                z ^= z >> 31;
                for (int lane = 0; lane < 4; lane++) {
                    if (((z >> (16 * lane)) & 0xFFFFu) < threshold) {
                        word |= 1ull << (4 * j + lane);
                    }
                }
            }
            out[r * words + w] = word;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------
 * HMAC-SHA256 of many short messages under one key (the encoder's token hashing).
 *
 * SHA-256 as FIPS 180-4 specifies it; HMAC as RFC 2104 (key longer than 64 bytes hashed
 * first, then zero-padded to 64; inner = SHA256(K ^ ipad || m), outer = SHA256(K ^ opad ||
 * inner)).  The padded key's two blocks are compressed once per call, so each message costs
 * its own blocks plus one outer block.  Checked against Python's hmac module in the tests
 * (RFC 4231 vectors and random messages).
 */

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static const uint32_t sha256_initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                           0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_compress_portable(uint32_t state[8], const uint8_t block[64]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
               ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR32(w[i - 15], 7) ^ ROTR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR32(w[i - 2], 17) ^ ROTR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR32(e, 6) ^ ROTR32(e, 11) ^ ROTR32(e, 25)) + ((e & f) ^ (~e & g)) +
                      sha256_k[i] + w[i];
        uint32_t t2 = (ROTR32(a, 2) ^ ROTR32(a, 13) ^ ROTR32(a, 22)) +
                      ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

enum { SHA_PORTABLE = 0, SHA_NI = 1, SHA_PATH_COUNT = 2 };
static const char *const sha_path_names[SHA_PATH_COUNT] = {"portable", "sha-ni"};
static int sha_path_supported[SHA_PATH_COUNT] = {1, 0};
static int best_sha_path = SHA_PORTABLE;

#if JIGSAW_X86
/* The same compression with the x86 SHA extensions (Intel SHA-NI; AMD since Zen): the state
 * is held as the ABEF / CDGH register pair the instructions expect, each sha256rnds2 runs two
 * rounds, sha256msg1 / sha256msg2 extend the message schedule four words at a time.  Checked
 * against the portable path and Python's hmac in tests/linkage/test_hmac_kernel.py. */
#define TARGET_SHA __attribute__((target("sha,sse4.1,ssse3")))

static TARGET_SHA void sha256_compress_ni(uint32_t state[8], const uint8_t block[64]) {
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    const __m128i abef_start = abef, cdgh_start = cdgh;
    __m128i schedule[16];
    for (int g = 0; g < 16; g++) {
        if (g < 4) {
            schedule[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * g)),
                                           byte_swap);
        } else {
            __m128i extended = _mm_sha256msg1_epu32(schedule[g - 4], schedule[g - 3]);
            extended = _mm_add_epi32(extended, _mm_alignr_epi8(schedule[g - 1], schedule[g - 2], 4));
            schedule[g] = _mm_sha256msg2_epu32(extended, schedule[g - 1]);
        }
        __m128i words = _mm_add_epi32(schedule[g],
                                      _mm_loadu_si128((const __m128i *)&sha256_k[4 * g]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, words);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(words, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef_start);
    cdgh = _mm_add_epi32(cdgh, cdgh_start);
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}
#endif

/* The compression of the path chosen for this call (portable, or SHA-NI where supported). */
static void sha256_compress_on(int path, uint32_t state[8], const uint8_t block[64]) {
#if JIGSAW_X86
    if (path == SHA_NI) {
        sha256_compress_ni(state, block);
        return;
    }
#endif
    (void)path;
    sha256_compress_portable(state, block);
}

/* SHA-256 of (prefix_length bytes already compressed into state) || parts[0] || ... ||
 * parts[count - 1]; the digest's 32 bytes go to out. prefix_length is a multiple of 64. */
static void sha256_finish_parts(int path, const uint32_t prefix_state[8], uint64_t prefix_length,
                                const uint8_t *const *parts, const size_t *lengths, int count,
                                uint8_t out[32]) {
    uint32_t state[8];
    memcpy(state, prefix_state, sizeof(state));
    uint8_t block[64];
    size_t filled = 0;
    uint64_t total = prefix_length;
    for (int p = 0; p < count; p++) {
        const uint8_t *data = parts[p];
        size_t left = lengths[p];
        total += left;
        while (left > 0) {
            size_t take = 64 - filled < left ? 64 - filled : left;
            memcpy(block + filled, data, take);
            filled += take;
            data += take;
            left -= take;
            if (filled == 64) {
                sha256_compress_on(path, state, block);
                filled = 0;
            }
        }
    }
    block[filled++] = 0x80;
    if (filled > 56) {
        memset(block + filled, 0, 64 - filled);
        sha256_compress_on(path, state, block);
        filled = 0;
    }
    memset(block + filled, 0, 56 - filled);
    uint64_t bits = total * 8;
    for (int i = 0; i < 8; i++) {
        block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    sha256_compress_on(path, state, block);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(state[i] >> 8);
        out[4 * i + 3] = (uint8_t)state[i];
    }
}

/* SHA-256 of (prefix_length bytes already compressed into state) || first || rest. */
static void sha256_finish(int path, const uint32_t prefix_state[8], uint64_t prefix_length,
                          const uint8_t *first, size_t first_length, const uint8_t *rest,
                          size_t rest_length, uint8_t out[32]) {
    const uint8_t *parts[2] = {first, rest};
    size_t lengths[2] = {first_length, rest_length};
    sha256_finish_parts(path, prefix_state, prefix_length, parts, lengths, 2, out);
}

/* HMAC-SHA256 of a key: the SHA-256 states after its inner and outer pad blocks (RFC 2104;
 * a key longer than the 64-byte block is hashed first). */
static void hmac_pad_states(int path, const uint8_t *key, size_t key_length,
                            uint32_t inner_state[8], uint32_t outer_state[8]) {
    uint8_t padded[64];
    memset(padded, 0, sizeof(padded));
    if (key_length > 64) {
        sha256_finish(path, sha256_initial, 0, key, key_length, NULL, 0, padded);
    } else {
        memcpy(padded, key, key_length);
    }
    uint8_t pad_block[64];
    memcpy(inner_state, sha256_initial, 8 * sizeof(uint32_t));
    memcpy(outer_state, sha256_initial, 8 * sizeof(uint32_t));
    for (int i = 0; i < 64; i++) pad_block[i] = padded[i] ^ 0x36;
    sha256_compress_on(path, inner_state, pad_block);
    for (int i = 0; i < 64; i++) pad_block[i] = padded[i] ^ 0x5c;
    sha256_compress_on(path, outer_state, pad_block);
}

/* One HMAC-SHA256 digest from the pad states, of the concatenated parts, as 8 little-endian
 * uint32 words. */
static void hmac_words_of(int path, const uint32_t inner_state[8], const uint32_t outer_state[8],
                          const uint8_t *const *parts, const size_t *lengths, int count,
                          uint32_t words[8]) {
    uint8_t inner[32], digest[32];
    sha256_finish_parts(path, inner_state, 64, parts, lengths, count, inner);
    sha256_finish(path, outer_state, 64, inner, 32, NULL, 0, digest);
    for (int j = 0; j < 8; j++) {
        words[j] = (uint32_t)digest[4 * j] | ((uint32_t)digest[4 * j + 1] << 8) |
                   ((uint32_t)digest[4 * j + 2] << 16) | ((uint32_t)digest[4 * j + 3] << 24);
    }
}

/* A valid path argument (-1: the fastest), or -2 with ValueError set. */
static int parse_sha_path(int path, const char *function) {
    if (path == -1) {
        return best_sha_path;
    }
    if (path < 0 || path >= SHA_PATH_COUNT || !sha_path_supported[path]) {
        PyErr_Format(PyExc_ValueError,
                     "%s: path must be -1 (the fastest) or the index of a path in "
                     "hmac_paths() that this CPU supports",
                     function);
        return -2;
    }
    return path;
}

/* offsets[0..count] ascending from 0.. within length (the parts of a blob). */
static int offsets_valid(const int64_t *offsets, Py_ssize_t count, Py_ssize_t length) {
    if (count < 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (offsets[i] < 0 || offsets[i] > offsets[i + 1] || offsets[i + 1] > length) {
            return 0;
        }
    }
    return 1;
}

static PyObject *py_hmac_paths(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *result = PyTuple_New(SHA_PATH_COUNT);
    if (result == NULL) {
        return NULL;
    }
    for (int p = 0; p < SHA_PATH_COUNT; p++) {
        PyObject *entry = Py_BuildValue("(sO)", sha_path_names[p],
                                        sha_path_supported[p] ? Py_True : Py_False);
        if (entry == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, p, entry);
    }
    return result;
}

static PyObject *py_hmac_words(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer key, data;
    PyObject *offsets_object, *out_object;
    int blocks, counter, path = -1;
    if (!PyArg_ParseTuple(args, "y*y*OipO|i", &key, &data, &offsets_object, &blocks, &counter,
                          &out_object, &path)) {
        return NULL;
    }
    path = parse_sha_path(path, "hmac_words");
    if (path < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_buffer views[2];
    if (!acquire(offsets_object, &views[0], "offsets", KIND_I64, 1, 0)) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        return NULL;
    }
    if (!acquire(out_object, &views[1], "out", KIND_U32, 2, 1)) {
        release_all(views, 1);
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t messages = views[0].shape[0] - 1;
    const int64_t *offsets = (const int64_t *)views[0].buf;
    int ok = blocks >= 1 && blocks <= 255 && (counter || blocks == 1) &&
             offsets_valid(offsets, messages, data.len) && views[1].shape[0] == messages &&
             views[1].shape[1] == (Py_ssize_t)blocks * 8;
    if (!ok) {
        release_all(views, 2);
        PyBuffer_Release(&key);
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError,
                        "hmac_words: expected 1..255 blocks (1 without a counter), offsets[n + 1] "
                        "ascending within data, and out of shape (n, 8 * blocks)");
        return NULL;
    }
    uint32_t inner_state[8], outer_state[8];
    hmac_pad_states(path, (const uint8_t *)key.buf, (size_t)key.len, inner_state, outer_state);
    const uint8_t *bytes = (const uint8_t *)data.buf;
    uint32_t *out = (uint32_t *)views[1].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < messages; i++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t counter_byte = (uint8_t)b;
            const uint8_t *parts[2] = {&counter_byte, bytes + offsets[i]};
            size_t lengths[2] = {counter ? 1 : 0, (size_t)(offsets[i + 1] - offsets[i])};
            hmac_words_of(path, inner_state, outer_state, parts, lengths, 2,
                          out + i * (Py_ssize_t)blocks * 8 + b * 8);
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/*
 * token_filters: the Bloom filter of each (prefix, value) combination, straight from the
 * tokens.  Combination c sets, for every token t of value combo_value[c], the positions of
 * the message prefix[combo_prefix[c]] || token t: words[h] % bits for h < hashes, where
 * words are the little-endian uint32 words of HMAC-SHA256(key, bytes([b]) + message) for
 * b = 0, 1, ... (8 words per b) -- the positions of token_positions() in encode.py, which the
 * tests check this against.  Value v's tokens are tokens[token_offsets[value_tokens[v]] ..
 * token_offsets[value_tokens[v + 1]]], one per token_offsets step.
 */
static PyObject *py_token_filters(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer key, prefixes, tokens;
    PyObject *objects[6];
    int hashes, path = -1;
    long long bits;
    if (!PyArg_ParseTuple(args, "y*y*Oy*OOOOiLO|i", &key, &prefixes, &objects[0], &tokens,
                          &objects[1], &objects[2], &objects[3], &objects[4], &hashes, &bits,
                          &objects[5], &path)) {
        return NULL;
    }
    Py_buffer buffers[3] = {key, prefixes, tokens};
    path = parse_sha_path(path, "token_filters");
    if (path < 0) {
        release_all(buffers, 3);
        return NULL;
    }
    static const char *const names[6] = {"prefix_offsets", "token_offsets", "value_tokens",
                                         "combo_value",    "combo_prefix",  "out"};
    Py_buffer views[6];
    for (int i = 0; i < 6; i++) {
        int is_out = i == 5;
        if (!acquire(objects[i], &views[i], names[i], is_out ? KIND_U64 : KIND_I64,
                     is_out ? 2 : 1, is_out)) {
            release_all(views, i);
            release_all(buffers, 3);
            return NULL;
        }
    }
    const int64_t *prefix_offsets = (const int64_t *)views[0].buf;
    const int64_t *token_offsets = (const int64_t *)views[1].buf;
    const int64_t *value_tokens = (const int64_t *)views[2].buf;
    const int64_t *combo_value = (const int64_t *)views[3].buf;
    const int64_t *combo_prefix = (const int64_t *)views[4].buf;
    Py_ssize_t n_prefixes = views[0].shape[0] - 1, n_tokens = views[1].shape[0] - 1;
    Py_ssize_t n_values = views[2].shape[0] - 1, combos = views[3].shape[0];
    Py_ssize_t words = views[5].shape[1];
    int ok = hashes >= 1 && hashes <= 255 * 8 && bits >= 1 && bits <= (long long)words * 64 &&
             offsets_valid(prefix_offsets, n_prefixes, prefixes.len) &&
             offsets_valid(token_offsets, n_tokens, tokens.len) &&
             offsets_valid(value_tokens, n_values, n_tokens) && views[4].shape[0] == combos &&
             views[5].shape[0] == combos;
    for (Py_ssize_t c = 0; ok && c < combos; c++) {
        ok = combo_value[c] >= 0 && combo_value[c] < n_values && combo_prefix[c] >= 0 &&
             combo_prefix[c] < n_prefixes;
    }
    if (!ok) {
        release_all(views, 6);
        release_all(buffers, 3);
        PyErr_SetString(PyExc_ValueError,
                        "token_filters: expected 1..2040 hashes, 1 <= bits <= 64 * out words, "
                        "ascending offsets within their blobs (value_tokens within the "
                        "tokens), combo_value and combo_prefix of one length within range, "
                        "and out of shape (combinations, words)");
        return NULL;
    }
    uint32_t inner_state[8], outer_state[8];
    hmac_pad_states(path, (const uint8_t *)key.buf, (size_t)key.len, inner_state, outer_state);
    const uint8_t *prefix_bytes = (const uint8_t *)prefixes.buf;
    const uint8_t *token_bytes = (const uint8_t *)tokens.buf;
    uint64_t *out = (uint64_t *)views[5].buf;
    uint64_t modulus = (uint64_t)bits;
    int blocks = (hashes + 7) / 8;
    Py_BEGIN_ALLOW_THREADS
    memset(out, 0, (size_t)combos * (size_t)words * sizeof(uint64_t));
    for (Py_ssize_t c = 0; c < combos; c++) {
        uint64_t *row = out + c * words;
        int64_t p = combo_prefix[c], v = combo_value[c];
        for (int64_t t = value_tokens[v]; t < value_tokens[v + 1]; t++) {
            for (int b = 0; b < blocks; b++) {
                uint8_t counter_byte = (uint8_t)b;
                const uint8_t *parts[3] = {&counter_byte, prefix_bytes + prefix_offsets[p],
                                           token_bytes + token_offsets[t]};
                size_t lengths[3] = {1, (size_t)(prefix_offsets[p + 1] - prefix_offsets[p]),
                                     (size_t)(token_offsets[t + 1] - token_offsets[t])};
                uint32_t digest_words[8];
                hmac_words_of(path, inner_state, outer_state, parts, lengths, 3, digest_words);
                int used = hashes - 8 * b < 8 ? hashes - 8 * b : 8;
                for (int h = 0; h < used; h++) {
                    uint64_t position = digest_words[h] % modulus;
                    row[position >> 6] |= (uint64_t)1 << (position & 63);
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 6);
    release_all(buffers, 3);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"kernel_name", py_kernel_name, METH_NOARGS, "Name of the fastest CPU path on this machine."},
    {"hmac_paths", py_hmac_paths, METH_NOARGS,
     "((name, supported), ...) of hmac_words' SHA-256 paths, by index (the optional path "
     "argument); -1 picks the fastest supported one."},
    {"available_kernels", py_available_kernels, METH_NOARGS,
     "Names of the CPU paths this machine can run, slowest first (ids are the positions in "
     "('portable', 'popcnt', 'avx512-vpopcntdq'))."},
    {"popcounts", py_popcounts, METH_VARARGS,
     "popcounts(filters, out, kernel): out[i] = number of set bits of filters[i]."},
    {"scan", py_scan, METH_VARARGS,
     "scan(...) -> (count, next_block, next_query): thresholded Dice, resumable."},
    {"pairs", py_pairs, METH_VARARGS,
     "pairs(left, left_popcounts, right, right_popcounts, left_idx, right_idx, start, stop, "
     "out, kernel): Dice of explicit pairs."},
    {"diffuse", py_diffuse, METH_VARARGS,
     "diffuse(filters, table, out): out bit j = XOR of the input bits table[j, :]."},
    {"blip_mask", py_blip_mask, METH_VARARGS,
     "blip_mask(seeds, threshold, out): keyed BLIP flip mask from one seed per row."},
    {"hmac_words", py_hmac_words, METH_VARARGS,
     "hmac_words(key, data, offsets, blocks, counter, out): out[i, 8b:8b+8] = the "
     "little-endian uint32 words of HMAC-SHA256(key, bytes([b]) + message i) with counter, "
     "of HMAC-SHA256(key, message i) without (then blocks = 1); message i = "
     "data[offsets[i]:offsets[i+1]]."},
    {"token_filters", py_token_filters, METH_VARARGS,
     "token_filters(key, prefixes, prefix_offsets, tokens, token_offsets, value_tokens, "
     "combo_value, combo_prefix, hashes, bits, out[, path]): out[c] = the Bloom filter of "
     "the tokens of value combo_value[c], each prefixed with prefix combo_prefix[c], under "
     "key (the positions of token_positions)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_dicekernel",
    "Compiled Dice popcount kernel (see linkage/similarity.py for the public API).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__dicekernel(void) {
#if JIGSAW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) {
        kernel_supported[KERNEL_POPCNT] = 1;
        best_kernel = KERNEL_POPCNT;
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) {
        kernel_supported[KERNEL_AVX512] = 1;
        best_kernel = KERNEL_AVX512;
    }
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx & bit_SHA) &&
        __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3")) {
        sha_path_supported[SHA_NI] = 1;
        best_sha_path = SHA_NI;
    }
#endif
    return PyModule_Create(&module);
}
