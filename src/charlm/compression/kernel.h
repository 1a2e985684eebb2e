/* What the symbol experts, the mixers and the bitwise stage share: the settings (Config), the coding
 * run's state (Model) and the constants that size them.
 *
 * The kernel is one translation unit: kernel.c includes exact.h, this header, then the parts. So the
 * functions here are static, and the bitwise stage may call the coder and the hashes of kernel.c
 * through the declarations at the end.
 */
#ifndef CHARLM_KERNEL_H
#define CHARLM_KERNEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>  /* madvise: huge pages for the large tables */
#endif

#include "exact.h"  /* squash, for the maps' starting values below */

#define NUM_BUCKETS 12      /* confidence buckets: log2 of a context's count, capped */
#define MAX_ORDERS 8
#define KINDS 3             /* rows by symbols seen: several, exactly one, exactly two */
#define SLOTS (KINDS * NUM_BUCKETS)  /* weights per expert: a confidence bucket for each kind */
#define MATCH_SCALE 8.0     /* the match expert's one-hot value */
#define HISTORY 32          /* symbols of history kept per lane (the longest context) */
#define POWERS 16384       /* Adam's bias corrections beta^n, tabulated */
/* An adaptive probability map's row: knots at stretch -8, -7.5, ..., 8 (bits.c's maps too). */
#define APM_KNOTS 33
#define APM_MIDDLE 16       /* the knot at stretch 0 */

typedef struct {
    int32_t lanes, alphabet, vocab;  /* A symbols; the network's logits cover the first `vocab` */
    int32_t steps;                   /* steps of the longest lane of the segment being coded */
    int32_t num_orders;
    int32_t orders[MAX_ORDERS];
    int32_t words;                   /* word experts: 0, 1 (the current word) or 2 (+ the previous one) */
    int32_t match;                   /* the match expert's context length; 0 = off */
    int32_t rows_log2;               /* rows per count table */
    int32_t match_rows_log2;
    int32_t window_log2;             /* the match expert looks back at most 2^window_log2 positions */
    int32_t limit;                   /* a count reaching it halves its row (recent text weighs more) */
    int32_t total;                   /* the coder's frequency total */
    int32_t esc_char, esc_byte;      /* escape symbols (pretrained mode), -1 = none */
    int32_t unk, start;              /* the network's input for symbols >= vocab, and before the first */
    int32_t features;                /* count experts' extra features: 1 seen-in-context, 2 last-seen */
    int32_t kinds;                   /* 2: rows of one symbol have weights of their own; 3: of two too */
    int32_t netsel;                  /* the expert whose confidence picks the network's weight; -1 none */
    int32_t apm;                     /* refine the likeliest symbol's probability: 0 off, 1 by order 1, 2 by order 2 */
    int32_t bit_models, bit_rows_log2, bit_limit;  /* the bitwise stage (bits.c): 0 models = off */
    double prior;                    /* added to every count */
    double mix_lr, beta1, beta2;     /* Adam for the mixing weights, one step per coded symbol */
    double mix_init, extra_logit;
    double apm_rate, apm_weight;     /* its table's learning rate; its share of the final probability */
    double bit_lr;                   /* the bitwise mixer's learning rate */
} Config;

struct Bits;

typedef struct {
    Config c;
    struct Bits *bits;     /* the bitwise stage; NULL = symbols coded whole */
    int E;                 /* count experts: orders, then words */
    int X;                 /* weight slots per set: E log-probabilities, E seen, E last, match, network */
    uint32_t rows, match_rows;
    uint16_t *counts;      /* E * rows * A */
    uint32_t *sums;        /* E * rows */
    uint16_t *distinct;    /* E * rows: symbols seen in the row */
    uint16_t *last;        /* E * rows: the symbol seen last in the row */
    double *logc;          /* log(c + prior), c = 0 .. limit */
    double lognorm_base;   /* A * prior */
    int32_t *hist;         /* L * HISTORY, newest first */
    int32_t *seen;         /* L: symbols this lane has coded */
    uint32_t *word, *prevword;  /* L: hashes of the current and the previous word, 0 = none */
    uint32_t *cur_rows;    /* L * E: each expert's row for the next symbol */
    int32_t *coded;        /* window: the symbols coded last, at position mod window (a ring) */
    int64_t *where;        /* match_rows: 1 + the position that followed a context last time, 0 none */
    int64_t base;          /* positions before the segment being coded: segments * steps * L */
    int64_t *pointer;      /* L: position the match expert predicts from, -1 = none */
    int32_t *run;          /* L: how many of its predictions in a row were right */
    const uint8_t *letter; /* A: 0 for a symbol that ends a word, else its case-folded code */
    double *w, *m1, *m2;   /* X * SLOTS: the mixing weights and Adam's moments */
    int32_t *updates;      /* the same, Adam's step counts */
    double *pow1, *pow2;   /* beta1^n, beta2^n for n < POWERS */
    double *bias;          /* A: logits of symbols the network lacks (the escapes) */
    double *z, *p, *q, *f; /* scratch: A, A, A, (E + 1) * A */
    Pun *pun;              /* scratch: A, for exps */
    double *apm;           /* apm contexts * APM_KNOTS: probability that the likeliest symbol comes, by its stretch */
    uint32_t apm_contexts;
    int32_t *bucket;       /* scratch: E + 1 */
    int32_t *lastsym;      /* scratch: E, -1 for a row never seen */
    uint32_t *cum;         /* scratch: A + 1 */
    /* the coder */
    uint64_t low, high, code;
    int64_t pending;
    uint8_t *out;
    size_t out_bits, out_cap;
    const uint8_t *in;
    size_t in_len, in_pos;
    /* the segment's symbols: given to the encoder, filled in by the decoder (cm_segment) */
    int32_t *symbols;      /* L * steps */
    const int32_t *lengths;/* L */
    uint8_t *extra;        /* L * steps * 4: the bytes an escape carries */
    uint8_t *extra_len;    /* L * steps */
    int32_t step;
} Model;

#define FULL 0xFFFFFFFFull
#define HALF 0x80000000ull
#define QUARTER 0x40000000ull

/* Memory asked for ahead of its use (a hint: no value changes, only when the bytes arrive). The
 * tables are hundreds of MB and read at hashed places, so each read is a trip to memory unless it
 * was asked for while other work ran. */
#if defined(__GNUC__) || defined(__clang__)
static inline void prefetch(const void *p) { __builtin_prefetch(p); }
#else
static inline void prefetch(const void *p) { (void)p; }
#endif
static inline void prefetch_span(const void *p, size_t bytes) {  /* every cache line of [p, p + bytes) */
    const char *c = (const char *)p;
    for (size_t o = 0; o < bytes; o += 64) prefetch(c + o);
    if (bytes) prefetch(c + bytes - 1);
}

/* A large table of zeros (calloc: pages no context reaches are never touched), asked to be kept in
 * huge pages where the system offers them: the tables are read at hashed places, and with 4 KB pages
 * nearly every read also misses the TLB. */
static void *big_table(size_t n, size_t size) {
    void *p = calloc(n, size);
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)1 << 21;
    uintptr_t start = ((uintptr_t)p + huge - 1) & ~(huge - 1), end = ((uintptr_t)p + n * size) & ~(huge - 1);
    if (p && end > start) madvise((void *)start, end - start, MADV_HUGEPAGE);  /* a hint: its failure is harmless */
#endif
    return p;
}

/* A map's starting value at knot j: the identity, squash of the knot's stretch. */
static double apm_knot(int j) { return squash((j - APM_MIDDLE) * 0.5); }


/* ---- kernel.c's, for the bitwise stage (bits.c) ---------------------------------------------- */

static uint32_t mix32(uint32_t h);                                    /* a bijective scramble */
static uint32_t order_hash(const int32_t *hist, int k, uint32_t salt); /* the last k symbols' hash */
static int encode(Model *m, uint32_t lo, uint32_t hi, uint32_t total); /* code [lo, hi) of total */
static int decode(Model *m, const uint32_t *cum, int n);               /* the symbol under cum */

#endif
