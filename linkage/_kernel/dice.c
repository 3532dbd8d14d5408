/*
 * dice.c: popcounts and Dice scores of packed Bloom filters (linkage/similarity.py).
 *
 * Role: every comparison of two encodings (online lookups, blocked batch linkage, LSH
 * candidate checks) ends here.  Only arithmetic on buffers the caller owns; the one state is
 * the CPU path chosen at module init.
 *
 * Dice(a, b) = 2 * |a AND b| / (|a| + |b|), computed in double as
 * (double)(2 * and_count) / (double)(count_a + count_b); Dice of two all-zero filters is 0.0.
 * Both operands are exact in double and IEEE division is correctly rounded, so the result is
 * bit-for-bit the one Python gives for 2 * and_count / (count_a + count_b).
 *
 * Threshold skipping: Dice(a, b) <= 2 * min(|a|, |b|) / (|a| + |b|).  For each query the scan
 * computes, with the same double arithmetic, the interval of candidate popcounts for which
 * that bound reaches the threshold, and skips other candidates before the AND.  The bound is
 * monotone in the candidate popcount on each side of the query popcount, and correctly
 * rounded division is monotone, so a skipped pair can never have scored at or above the
 * threshold: results are identical with and without the skip.
 *
 * CPU paths (chosen at init, overridable per call for tests):
 *   0 "portable"          plain C (compiler builtin popcount or a SWAR fallback)
 *   1 "popcnt"            x86-64 POPCNT instruction, scalar, 16-word case unrolled
 *   2 "avx512-vpopcntdq"  AVX-512F + VPOPCNTDQ, 16-word case as two 512-bit loads per filter;
 *                         scan() takes eight candidates at a time (one transposing reduction
 *                         of their popcounts, one vector test against the threshold), skipping
 *                         a group of eight before the AND when no member can reach it
 * Define JIGSAW_PORTABLE_ONLY to build only the portable path (what non-x86-64 machines
 * get), e.g. to check that it compiles.
 *
 * Entry points (all buffers C-contiguous; shapes as named):
 *   kernel_name() -> str;  available_kernels() -> tuple[str, ...]
 *   popcounts(filters[n, words] u64, out[n] u32, kernel) -> None
 *   scan(queries[nq, words] u64, query_popcounts[nq] u32, candidates[nc, words] u64,
 *        candidate_popcounts[nc] u32, threshold, query_start, query_stop, candidate_start,
 *        candidate_stop, resume_block, resume_query, out_query[cap] i64,
 *        out_candidate[cap] i64, out_score[cap] f64, use_bound, kernel)
 *        -> (count, next_block, next_query)
 *      Writes every pair with score >= threshold in the given ranges, candidate-block by
 *      candidate-block (cache tiling), each block query by query, each query's candidates in
 *      ascending order, and stops before a query whose block might not fit in the room left.
 *      Call again with resume_block = next_block and resume_query = next_query while
 *      next_block < candidate_stop.  Start with resume_block = candidate_start, resume_query =
 *      query_start.
 *   pairs(left[nl, words] u64, left_popcounts[nl] u32, right[nr, words] u64,
 *         right_popcounts[nr] u32, left_idx[np] i64, right_idx[np] i64, start, stop,
 *         out[stop - start] f64, kernel) -> None
 *      out[k - start] = Dice(left[left_idx[k]], right[right_idx[k]]); raises IndexError
 *      naming the index argument if an index is out of range.
 */
#include "kernel.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(JIGSAW_PORTABLE_ONLY)
#define JIGSAW_X86 1
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

/* ---------------------------------------------------------------- argument checks */

static Py_ssize_t rows_of(const Py_buffer *view) { return view->ndim == 0 ? 1 : view->shape[0]; }

static int parse_kernel(int kernel) {
    if (kernel < 0 || kernel >= KERNEL_COUNT || !kernel_supported[kernel]) {
        PyErr_Format(PyExc_ValueError, "kernel: expected a supported kernel id, got %d", kernel);
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- Python entry points */

void dice_detect_cpu(void) {
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
#endif
}

PyObject *py_kernel_name(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(kernel_names[best_kernel]);
}

PyObject *py_available_kernels(PyObject *self, PyObject *unused) {
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

PyObject *py_popcounts(PyObject *self, PyObject *args) {
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

PyObject *py_scan(PyObject *self, PyObject *args) {
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

PyObject *py_pairs(PyObject *self, PyObject *args) {
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
