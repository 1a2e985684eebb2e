/* The compressor's per-step work in one call: context experts, mixing, arithmetic coding, learning.
 *
 * charlm's compressor predicts each symbol with a recurrent network mixed with context experts.
 * Coding runs one step at a time, and a step done as some sixty small torch operations spends most
 * of its time dispatching them; this file does everything after the network's logits in one C
 * call per step (cm_step), and with the online mode's network in C too (net.c) a whole chunk of
 * steps per call (cm_run):
 *
 *   1. each expert's log-probabilities for the next symbol of every lane: hashed order-k counts,
 *      word counts (the word so far; with the word before it), and the match expert (the symbol
 *      that followed the last occurrence of the current context);
 *   2. geometric mixing, a product of experts, then a softmax:
 *        z = w_net[b] * logits + bias + sum_e (w[e][b_e] * log p_e + w_seen[e][b_e] * [c_e > 0]
 *                                               + w_last[e][b_e] * [seen last in e's context])
 *      where b_e is the confidence bucket of expert e's context (log2 of its count, and whether one,
 *      two or more symbols followed it) and b that of the word expert;
 *   3. an adaptive probability map refines the likeliest symbol's probability by what followed that
 *      probability after the same previous symbol before;
 *   4. integer frequencies floor(q * (total - A)) + 1 and the arithmetic coder (the same stream as
 *      charlm/coder.py: Witten, Neal & Cleary, 32 bits), encoding or decoding the symbol;
 *   5. learning from the symbol: each mixing weight used takes an Adam step at once, the map and
 *      the counts learn it, and the network's gradient w_net * (p - onehot) is written out for the
 *      network's block update (net.c, or torch for a trained run).
 *
 * The decoder must compute bit-identical probabilities, so everything here is plain IEEE arithmetic
 * in a fixed order: no libm transcendental functions (exp and log are the polynomials below;
 * floor, frexp and sqrt are exact by definition), no fused multiply-adds (the build turns
 * contraction off, kernel.py), sums reduce in a fixed order. Integers hash the contexts.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NUM_BUCKETS 12      /* confidence buckets: log2 of a context's count, capped */
#define MAX_ORDERS 8
#define KINDS 3             /* rows by symbols seen: several, exactly one, exactly two */
#define SLOTS (KINDS * NUM_BUCKETS)  /* weights per expert: a confidence bucket for each kind */
#define MATCH_SCALE 8.0     /* the match expert's one-hot value */
#define HISTORY 32          /* symbols of history kept per lane (the longest context) */
#define POWERS 16384       /* Adam's bias corrections beta^n, tabulated */

typedef struct {
    int32_t lanes, alphabet, vocab;  /* A symbols; the network's logits cover the first `vocab` */
    int32_t steps;                   /* steps of the longest lane */
    int32_t num_orders;
    int32_t orders[MAX_ORDERS];
    int32_t words;                   /* word experts: 0, 1 (the current word) or 2 (+ the previous one) */
    int32_t match;                   /* the match expert's context length; 0 = off */
    int32_t rows_log2;               /* rows per count table */
    int32_t match_rows_log2;
    int32_t limit;                   /* a count reaching it halves its row (recent text weighs more) */
    int32_t total;                   /* the coder's frequency total */
    int32_t esc_char, esc_byte;      /* escape symbols (pretrained mode), -1 = none */
    int32_t unk, start;              /* the network's input for symbols >= vocab, and before the first */
    int32_t features;                /* count experts' extra features: 1 seen-in-context, 2 last-seen */
    int32_t kinds;                   /* 2: rows of one symbol have weights of their own; 3: of two too */
    int32_t netsel;                  /* the expert whose confidence picks the network's weight; -1 none */
    int32_t apm;                     /* refine the likeliest symbol's probability: 0 off, 1 by order 1, 2 by order 2 */
    double prior;                    /* added to every count */
    double mix_lr, beta1, beta2;     /* Adam for the mixing weights, one step per coded symbol */
    double mix_init, extra_logit;
    double apm_rate, apm_weight;     /* its table's learning rate; its share of the final probability */
} Config;

typedef struct {
    Config c;
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
    int32_t *coded;        /* steps * L: every symbol, -1 before it is coded */
    int32_t *where;        /* match_rows: position that followed a context last time */
    int64_t *pointer;      /* L: position the match expert predicts from, -1 = none */
    int32_t *run;          /* L: how many of its predictions in a row were right */
    const uint8_t *letter; /* A: 0 for a symbol that ends a word, else its case-folded code */
    double *w, *m1, *m2;   /* X * SLOTS: the mixing weights and Adam's moments */
    int32_t *updates;      /* the same, Adam's step counts */
    double *pow1, *pow2;   /* beta1^n, beta2^n for n < POWERS */
    double *bias;          /* A: logits of symbols the network lacks (the escapes) */
    double *z, *p, *q, *f; /* scratch: A, A, A, (E + 1) * A */
    double *apm;           /* apm contexts * 33: probability that the likeliest symbol comes, by its stretch */
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
    /* the symbols: given to the encoder, filled in by the decoder */
    int32_t *symbols;      /* L * steps */
    const int32_t *lengths;/* L */
    uint8_t *extra;        /* L * steps * 4: the bytes an escape carries */
    uint8_t *extra_len;    /* L * steps */
    int32_t step;
} Model;

#define FULL 0xFFFFFFFFull
#define HALF 0x80000000ull
#define QUARTER 0x40000000ull

/* ---- exact-by-construction exp and log ------------------------------------------------------ */

static double cm_exp(double x) {  /* x <= 0 */
    if (x < -700.0) return 0.0;
    double k = floor(x * 1.4426950408889634 + 0.5);
    /* ln 2 split so that k * hi is exact for |k| < 2^11 */
    double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double s = 1.0 / 479001600.0;  /* Taylor to r^12, |r| <= 0.35: error below 1e-16 */
    s = s * r + 1.0 / 39916800.0;
    s = s * r + 1.0 / 3628800.0;
    s = s * r + 1.0 / 362880.0;
    s = s * r + 1.0 / 40320.0;
    s = s * r + 1.0 / 5040.0;
    s = s * r + 1.0 / 720.0;
    s = s * r + 1.0 / 120.0;
    s = s * r + 1.0 / 24.0;
    s = s * r + 1.0 / 6.0;
    s = s * r + 0.5;
    s = s * r + 1.0;
    s = s * r + 1.0;
    /* times 2^k, built from its bits: exact (k >= -1010 here, a normal number) and no libm call */
    union { uint64_t bits; double value; } scale = { (uint64_t)((int64_t)k + 1023) << 52 };
    return s * scale.value;
}

static double cm_log(double x) {  /* x > 0 */
    int e;
    double m = frexp(x, &e);  /* x = m * 2^e, m in [0.5, 1) */
    if (m < 0.70710678118654752) { m *= 2.0; e -= 1; }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;  /* log m = 2 atanh s, |s| < 0.172 */
    double q = 1.0 / 19.0;
    for (int k = 17; k >= 1; k -= 2) q = q * s2 + 1.0 / k;
    return e * 0.69314718055994530942 + 2.0 * s * q;
}

static double squash(double x) {  /* 1 / (1 + e^-x) */
    return x >= 0 ? 1.0 / (1.0 + cm_exp(-x)) : cm_exp(x) / (1.0 + cm_exp(x));
}

/* ---- the online mode's network ------------------------------------------------------------ */

#include "net.c"

/* ---- hashing ------------------------------------------------------------------------------- */

static uint32_t mix32(uint32_t h) {  /* a bijective scramble: every input bit moves every output bit */
    h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
    return h;
}

static uint32_t order_hash(const int32_t *hist, int k, uint32_t salt) {
    uint32_t h = salt * 0x9E3779B1u;
    for (int j = 0; j < k; j++) h = mix32(h + (uint32_t)hist[j] + 1u);
    return h;
}

static void context_rows(Model *m, int l) {
    const int32_t *hist = m->hist + (size_t)l * HISTORY;
    uint32_t *rows = m->cur_rows + (size_t)l * m->E, mask = m->rows - 1;
    int seen = m->seen[l];
    for (int i = 0; i < m->c.num_orders; i++) {
        int k = m->c.orders[i];
        /* before a lane has k symbols its context is shorter: hash what there is (the start differs) */
        rows[i] = order_hash(hist, k < seen ? k : seen, (uint32_t)(i + 1)) & mask;
    }
    int e = m->c.num_orders;
    if (m->c.words >= 1) {  /* the word so far; between words, the symbol after the last word */
        uint32_t h = m->word[l] ? m->word[l] : (uint32_t)hist[0] + 0x10000u;
        rows[e++] = mix32(h * 0x9E3779B1u + 101u) & mask;
    }
    if (m->c.words >= 2) {  /* the word so far and the word before it */
        uint32_t h = mix32(m->word[l] + 0x5bd1e995u * m->prevword[l] + 202u);
        rows[e++] = mix32(h + (m->word[l] ? 0u : (uint32_t)hist[0] + 7u)) & mask;
    }
}

static uint32_t match_hash(const Model *m, int l) {
    return order_hash(m->hist + (size_t)l * HISTORY, m->c.match, 77u) & (m->match_rows - 1);
}

/* ---- the coder: exactly charlm/coder.py's stream ------------------------------------------- */

static int emit(Model *m, int bit) {
    size_t need = (m->out_bits + 1 + (size_t)m->pending + 7) / 8 + 1;
    if (need > m->out_cap) {
        size_t cap = m->out_cap * 2 > need ? m->out_cap * 2 : need + 4096;
        uint8_t *grown = realloc(m->out, cap);
        if (!grown) return -1;
        memset(grown + m->out_cap, 0, cap - m->out_cap);
        m->out = grown;
        m->out_cap = cap;
    }
    for (int64_t i = -1; i < m->pending; i++) {
        int b = i < 0 ? bit : 1 - bit;
        if (b) m->out[m->out_bits >> 3] |= (uint8_t)(0x80u >> (m->out_bits & 7));
        m->out_bits++;
    }
    m->pending = 0;
    return 0;
}

static int encode(Model *m, uint32_t lo, uint32_t hi, uint32_t total) {
    uint64_t span = m->high - m->low + 1;
    m->high = m->low + span * hi / total - 1;
    m->low = m->low + span * lo / total;
    for (;;) {
        if (m->high < HALF) {
            if (emit(m, 0)) return -1;
        } else if (m->low >= HALF) {
            if (emit(m, 1)) return -1;
            m->low -= HALF; m->high -= HALF;
        } else if (m->low >= QUARTER && m->high < 3 * QUARTER) {
            m->pending++;
            m->low -= QUARTER; m->high -= QUARTER;
        } else {
            return 0;
        }
        m->low = 2 * m->low; m->high = 2 * m->high + 1;
    }
}

static int next_bit(Model *m) {
    size_t byte = m->in_pos >> 3;
    int bit = byte < m->in_len ? (m->in[byte] >> (7 - (m->in_pos & 7))) & 1 : 0;
    m->in_pos++;
    return bit;
}

/* The symbol whose counts hold the code point, and the interval narrowed to it; -1 if damaged. */
static int decode(Model *m, const uint32_t *cum, int n) {
    uint32_t total = cum[n];
    uint64_t span = m->high - m->low + 1;
    uint64_t target = ((m->code - m->low + 1) * total - 1) / span;
    if (m->code < m->low || target >= total) return -1;
    int s = 0;
    while (cum[s + 1] <= target) s++;
    m->high = m->low + span * cum[s + 1] / total - 1;
    m->low = m->low + span * cum[s] / total;
    for (;;) {
        if (m->high < HALF) {
        } else if (m->low >= HALF) {
            m->low -= HALF; m->high -= HALF; m->code -= HALF;
        } else if (m->low >= QUARTER && m->high < 3 * QUARTER) {
            m->low -= QUARTER; m->high -= QUARTER; m->code -= QUARTER;
        } else {
            return s;
        }
        m->low = 2 * m->low; m->high = 2 * m->high + 1;
        m->code = 2 * m->code + (uint64_t)next_bit(m);
    }
}

static uint32_t uniform_cum[257];

static int code_byte(Model *m, int decoding, int value) {  /* a byte under the fixed uniform model */
    if (decoding) return decode(m, uniform_cum, 256);
    return encode(m, (uint32_t)value, (uint32_t)value + 1, 256) ? -1 : value;
}

static int utf8_length(int lead) {
    return lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : 4;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

void cm_free(Model *m);

Model *cm_new(const Config *config, int32_t *symbols, const int32_t *lengths, uint8_t *extra,
              uint8_t *extra_len, const uint8_t *letter) {
    Model *m = calloc(1, sizeof(Model));
    if (!m) return NULL;
    m->c = *config;
    const Config *c = &m->c;
    int L = c->lanes, A = c->alphabet;
    m->E = c->num_orders + c->words;
    m->X = 3 * m->E + 2;
    m->rows = 1u << c->rows_log2;
    m->match_rows = 1u << c->match_rows_log2;
    size_t W = (size_t)m->X * SLOTS;
    size_t steps = c->steps > 0 ? (size_t)c->steps : 1;
    m->counts = calloc((size_t)m->E * m->rows * A + 1, sizeof(uint16_t));
    m->sums = calloc((size_t)m->E * m->rows + 1, sizeof(uint32_t));
    m->distinct = calloc((size_t)m->E * m->rows + 1, sizeof(uint16_t));
    m->last = calloc((size_t)m->E * m->rows + 1, sizeof(uint16_t));
    m->logc = calloc((size_t)c->limit + 1, sizeof(double));
    m->hist = calloc((size_t)L * HISTORY, sizeof(int32_t));
    m->seen = calloc(L, sizeof(int32_t));
    m->word = calloc(L, sizeof(uint32_t));
    m->prevword = calloc(L, sizeof(uint32_t));
    m->cur_rows = calloc((size_t)L * m->E + 1, sizeof(uint32_t));
    m->coded = malloc(steps * L * sizeof(int32_t));
    m->where = malloc((size_t)m->match_rows * sizeof(int32_t));
    m->pointer = malloc(L * sizeof(int64_t));
    m->run = calloc(L, sizeof(int32_t));
    m->w = calloc(W, sizeof(double));
    m->m1 = calloc(W, sizeof(double));
    m->m2 = calloc(W, sizeof(double));
    m->updates = calloc(W, sizeof(int32_t));
    m->pow1 = malloc(POWERS * sizeof(double));
    m->pow2 = malloc(POWERS * sizeof(double));
    m->bias = malloc(A * sizeof(double));
    m->z = malloc(A * sizeof(double));
    m->p = malloc(A * sizeof(double));
    m->q = malloc(A * sizeof(double));
    m->apm_contexts = c->apm == 2 ? 1u << 16 : (uint32_t)A;
    m->apm = malloc((size_t)m->apm_contexts * 33 * sizeof(double));
    m->f = malloc((size_t)(m->E + 1) * A * sizeof(double));
    m->bucket = calloc(m->E + 1, sizeof(int32_t));
    m->lastsym = calloc(m->E + 1, sizeof(int32_t));
    m->cum = malloc((A + 1) * sizeof(uint32_t));
    m->out_cap = 4096;
    m->out = calloc(m->out_cap, 1);
    if (!m->counts || !m->sums || !m->distinct || !m->last || !m->lastsym || !m->logc || !m->hist || !m->seen || !m->word ||
        !m->prevword || !m->cur_rows || !m->coded || !m->where || !m->pointer || !m->run || !m->w ||
        !m->m1 || !m->m2 || !m->updates || !m->pow1 || !m->pow2 || !m->bias || !m->z || !m->p || !m->q || !m->apm || !m->f || !m->bucket ||
        !m->cum || !m->out) {
        cm_free(m);
        return NULL;
    }
    m->pow1[0] = m->pow2[0] = 1.0;  /* by repeated products: exact and libm-free */
    for (int i = 1; i < POWERS; i++) { m->pow1[i] = m->pow1[i - 1] * c->beta1; m->pow2[i] = m->pow2[i - 1] * c->beta2; }
    for (int v = 0; v <= c->limit; v++) m->logc[v] = cm_log(v + c->prior);
    m->lognorm_base = A * c->prior;
    for (size_t i = 0; i < steps * L; i++) m->coded[i] = -1;
    for (uint32_t i = 0; i < m->match_rows; i++) m->where[i] = -1;
    for (int l = 0; l < L; l++) m->pointer[l] = -1;
    for (size_t i = 0; i < W; i++) {
        size_t slot = i / SLOTS;
        m->w[i] = slot == (size_t)m->X - 1 ? 1.0  /* the network's logits as they are */
                  : slot >= (size_t)m->E && slot < (size_t)3 * m->E ? 0.0 : c->mix_init;
    }
    for (int a = 0; a < A; a++) m->bias[a] = a < c->vocab ? 0.0 : c->extra_logit;
    for (uint32_t i = 0; i < m->apm_contexts; i++)  /* the identity to start with */
        for (int j = 0; j < 33; j++) m->apm[(size_t)i * 33 + j] = squash((j - 16) * 0.5);
    for (int i = 0; i <= 256; i++) uniform_cum[i] = (uint32_t)i;
    m->symbols = symbols;
    m->lengths = lengths;
    m->extra = extra;
    m->extra_len = extra_len;
    m->letter = letter;
    m->high = FULL;
    for (int l = 0; l < L; l++) {
        for (int j = 0; j < HISTORY; j++) m->hist[(size_t)l * HISTORY + j] = c->start;
        context_rows(m, l);
    }
    return m;
}

void cm_free(Model *m) {
    if (!m) return;
    free(m->counts); free(m->sums); free(m->distinct); free(m->last); free(m->lastsym); free(m->logc); free(m->hist); free(m->seen);
    free(m->word); free(m->prevword); free(m->cur_rows); free(m->coded); free(m->where);
    free(m->pointer); free(m->run); free(m->w); free(m->m1); free(m->m2); free(m->updates);
    free(m->pow1); free(m->pow2);
    free(m->bias); free(m->z); free(m->p); free(m->q); free(m->apm); free(m->f); free(m->bucket); free(m->cum); free(m->out);
    free(m);
}

/* The decoder reads `data`; it starts with the first 32 bits in `code`. */
void cm_set_input(Model *m, const uint8_t *data, size_t n) {
    m->in = data;
    m->in_len = n;
    m->in_pos = 0;
    m->code = 0;
    for (int i = 0; i < 32; i++) m->code = 2 * m->code + (uint64_t)next_bit(m);
}

/* Two more bits pick a point inside the final interval; returns the stream's length in bytes. */
int64_t cm_finish(Model *m) {
    m->pending++;
    if (emit(m, m->low < QUARTER ? 0 : 1)) return -1;
    return (int64_t)((m->out_bits + 7) / 8);
}

const uint8_t *cm_output(const Model *m) { return m->out; }

/* ---- sums in a fixed order: four running partial sums, so that they pipeline ---------------- */

static double dot(const double *x, const double *y, int n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) { s0 += x[i] * y[i]; s1 += x[i + 1] * y[i + 1]; s2 += x[i + 2] * y[i + 2]; s3 += x[i + 3] * y[i + 3]; }
    for (; i < n; i++) s0 += x[i] * y[i];
    return (s0 + s1) + (s2 + s3);
}

static double seen_mass(const double *p, const uint16_t *cnt, int n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += cnt[i] ? p[i] : 0.0; s1 += cnt[i + 1] ? p[i + 1] : 0.0;
        s2 += cnt[i + 2] ? p[i + 2] : 0.0; s3 += cnt[i + 3] ? p[i + 3] : 0.0;
    }
    for (; i < n; i++) s0 += cnt[i] ? p[i] : 0.0;
    return (s0 + s1) + (s2 + s3);
}

/* ---- one step ------------------------------------------------------------------------------ */

static void count(Model *m, int e, uint32_t row, int y) {
    size_t at = (size_t)e * m->rows + row;
    uint16_t *cnt = m->counts + at * m->c.alphabet;
    if (cnt[y] == 0) m->distinct[at]++;
    cnt[y]++;
    m->sums[at]++;
    m->last[at] = (uint16_t)y;
    if (cnt[y] >= m->c.limit) {  /* halve the row: what followed this context lately counts more */
        uint32_t sum = 0;
        uint16_t distinct = 0;
        for (int a = 0; a < m->c.alphabet; a++) {
            cnt[a] >>= 1;
            sum += cnt[a];
            distinct += cnt[a] > 0;
        }
        m->sums[at] = sum;
        m->distinct[at] = distinct;
    }
}

static int bucket_of(uint32_t n) {
    int b = 0;
    while (b < NUM_BUCKETS - 1 && (n + 1) >> (b + 1)) b++;
    return b;  /* floor(log2(n + 1)), capped */
}

/* Code step `step` of every lane. `lm` holds the network's logits (L x vocab, float32); on return
 * `ids` (L) holds the network's next inputs and `grad` (L x vocab) the gradient of the code length
 * with respect to the logits (zero for a lane that has ended). 0, or -1 for a damaged stream, -2
 * for memory. */
int cm_step(Model *m, int decoding, const float *lm, int64_t *ids, float *grad) {
    const Config *c = &m->c;
    const int L = c->lanes, A = c->alphabet, V = c->vocab, E = m->E, X = m->X;
    const int t = m->step;
    const size_t NBB = SLOTS;
    for (int l = 0; l < L; l++) {
        float *g = grad + (size_t)l * V;
        if (t >= m->lengths[l]) {
            memset(g, 0, (size_t)V * sizeof(float));
            continue;
        }
        const float *logits = lm + (size_t)l * V;
        const uint32_t *rows = m->cur_rows + (size_t)l * E;
        const double *w = m->w;
        /* The network's weight by the confidence of one expert's context (`netsel`): where the
         * counts know the context well, the network matters less. */
        int lmslot = 0;
        if (c->netsel >= 0 && c->netsel < E) {
            size_t at = (size_t)c->netsel * m->rows + rows[c->netsel];
            lmslot = bucket_of(m->sums[at]) + (m->distinct[at] == 1 ? NUM_BUCKETS : 0);
        }
        double wlm = w[(size_t)(X - 1) * NBB + lmslot];
        double *z = m->z;
        for (int a = 0; a < V; a++) z[a] = wlm * logits[a];
        for (int a = V; a < A; a++) z[a] = m->bias[a];
        for (int e = 0; e < E; e++) {
            size_t at = (size_t)e * m->rows + rows[e];
            const uint16_t *cnt = m->counts + at * A;
            uint32_t n = m->sums[at];
            double norm = cm_log(n + m->lognorm_base);
            int kind = m->distinct[at] == 1 ? 1 : m->distinct[at] == 2 && c->kinds > 2 ? 2 : 0;
            int b = bucket_of(n) + kind * NUM_BUCKETS;
            m->bucket[e] = b;
            double we = w[(size_t)e * NBB + b];
            double *f = m->f + (size_t)e * A;
            double ws = (c->features & 1) ? w[(size_t)(E + e) * NBB + b] : 0.0;
            for (int a = 0; a < A; a++) {  /* seen in this context at all: a learned escape, per bucket */
                f[a] = m->logc[cnt[a]] - norm;
                z[a] += we * f[a] + (cnt[a] ? ws : 0.0);
            }
            m->lastsym[e] = n ? m->last[at] : -1;
            if ((c->features & 2) && n) z[m->last[at]] += w[(size_t)(2 * E + e) * NBB + b];
        }
        int predicted = -1;
        if (c->match) {
            int64_t ptr = m->pointer[l];
            if (ptr >= 0 && ptr < (int64_t)t * L + l) predicted = m->coded[ptr];
            m->bucket[E] = m->run[l] < NUM_BUCKETS - 1 ? m->run[l] : NUM_BUCKETS - 1;
            if (predicted >= 0) z[predicted] += w[(size_t)3 * E * NBB + m->bucket[E]] * MATCH_SCALE;
        }
        /* 2. softmax and frequencies */
        double top = z[0];
        for (int a = 1; a < A; a++) if (z[a] > top) top = z[a];
        double sum = 0.0;
        double *p = m->p;
        for (int a = 0; a < A; a++) { p[a] = cm_exp(z[a] - top); sum += p[a]; }
        for (int a = 0; a < A; a++) p[a] /= sum;
        /* 2b. the likeliest symbol's probability, refined by what followed that probability in
         * this context before (an adaptive probability map, interpolated between 33 knots) */
        double *q = p;
        int best = 0;
        size_t knot = 0;
        double frac = 0.0, *apm = NULL;
        for (int a = 1; a < A; a++) if (z[a] > z[best]) best = a;
        if (c->apm && p[best] < 1.0 - 1e-9 && p[best] > 1e-9) {
            const int32_t *hist = m->hist + (size_t)l * HISTORY;
            uint32_t ctx = c->apm == 2 ? order_hash(hist, 2, 99u) >> 16 : (uint32_t)hist[0];
            double st = cm_log(p[best] / (1.0 - p[best]));
            st = st < -7.999 ? -7.999 : st > 7.999 ? 7.999 : st;
            double pos = (st + 8.0) * 2.0;
            knot = (size_t)floor(pos);
            frac = pos - knot;
            apm = m->apm + (size_t)ctx * 33;
            double refined = (1.0 - frac) * apm[knot] + frac * apm[knot + 1];
            double pn = (1.0 - c->apm_weight) * p[best] + c->apm_weight * refined;
            pn = pn < 1e-6 ? 1e-6 : pn > 1.0 - 1e-6 ? 1.0 - 1e-6 : pn;
            double rest = (1.0 - pn) / (1.0 - p[best]);
            q = m->q;
            for (int a = 0; a < A; a++) q[a] = p[a] * rest;
            q[best] = pn;
        }
        uint32_t *cum = m->cum;
        double scale = (double)(c->total - A);
        cum[0] = 0;
        for (int a = 0; a < A; a++) cum[a + 1] = cum[a] + (uint32_t)floor(q[a] * scale) + 1u;
        /* 3. code the symbol */
        size_t at = (size_t)l * c->steps + t;
        int y;
        if (decoding) {
            y = decode(m, cum, A);
            if (y < 0) return -1;
            m->symbols[at] = y;
        } else {
            y = m->symbols[at];
            if (y < 0 || y >= A || encode(m, cum[y], cum[y + 1], cum[A])) return y < 0 || y >= A ? -1 : -2;
        }
        if (y == c->esc_char || y == c->esc_byte) {
            uint8_t *bytes = m->extra + at * 4;
            int first = code_byte(m, decoding, bytes[0]);
            if (first < 0) return decoding ? -1 : -2;
            int n = y == c->esc_byte ? 1 : utf8_length(first);
            if (decoding) { bytes[0] = (uint8_t)first; m->extra_len[at] = (uint8_t)n; }
            for (int i = 1; i < n; i++) {
                int v = code_byte(m, decoding, bytes[i]);
                if (v < 0) return decoding ? -1 : -2;
                bytes[i] = (uint8_t)v;
            }
        }
        /* 4. learn: the map, the network's gradient, then an Adam step for each mixing weight used */
        if (apm) {
            double hit = y == best ? 1.0 : 0.0;
            apm[knot] += c->apm_rate * (1.0 - frac) * (hit - apm[knot]);
            apm[knot + 1] += c->apm_rate * frac * (hit - apm[knot + 1]);
        }
        for (int a = 0; a < V; a++) g[a] = (float)(wlm * (p[a] - (a == y)));
        for (int a = V; a < A; a++) m->bias[a] -= 0.5 * (p[a] - (a == y));  /* plain SGD: Adam would push unseen escapes down a step per symbol */
        for (int e = 0; e < X; e++) {
            size_t wi;
            double gw = 0.0;
            if (e < E) {
                gw = dot(p, m->f + (size_t)e * A, A) - m->f[(size_t)e * A + y];
                wi = (size_t)e * NBB + m->bucket[e];
            } else if (e < 2 * E) {
                if (!(c->features & 1)) continue;
                const uint16_t *cnt = m->counts + ((size_t)(e - E) * m->rows + rows[e - E]) * A;
                gw = seen_mass(p, cnt, A) - (cnt[y] ? 1.0 : 0.0);
                wi = (size_t)e * NBB + m->bucket[e - E];
            } else if (e < 3 * E) {
                int last = m->lastsym[e - 2 * E];
                if (!(c->features & 2) || last < 0) continue;
                gw = p[last] - (last == y);
                wi = (size_t)e * NBB + m->bucket[e - 2 * E];
            } else if (e == 3 * E) {
                if (predicted < 0) continue;
                gw = MATCH_SCALE * (p[predicted] - (predicted == y));
                wi = (size_t)e * NBB + m->bucket[E];
            } else {
                for (int a = 0; a < V; a++) gw += p[a] * logits[a];
                gw -= y < V ? logits[y] : 0.0;
                wi = (size_t)(X - 1) * NBB + lmslot;
            }
            int n = ++m->updates[wi];
            m->m1[wi] = c->beta1 * m->m1[wi] + (1 - c->beta1) * gw;
            m->m2[wi] = c->beta2 * m->m2[wi] + (1 - c->beta2) * gw * gw;
            double c1 = n < POWERS ? m->pow1[n] : 0.0, c2 = n < POWERS ? m->pow2[n] : 0.0;
            double mh = m->m1[wi] / (1 - c1), vh = m->m2[wi] / (1 - c2);
            m->w[wi] -= c->mix_lr * mh / (sqrt(vh) + 1e-8);
        }
        /* 5. count it, follow or find a match, move the contexts on */
        for (int e = 0; e < E; e++) count(m, e, rows[e], y);
        int32_t *hist = m->hist + (size_t)l * HISTORY;
        int64_t position = (int64_t)t * L + l;
        m->coded[position] = y;
        if (c->match) {
            int hit = predicted == y;
            m->run[l] = hit ? m->run[l] + 1 : 0;
            m->pointer[l] = hit ? m->pointer[l] + L : -1;
            if (m->seen[l] >= c->match) m->where[match_hash(m, l)] = (int32_t)position;
        }
        memmove(hist + 1, hist, (HISTORY - 1) * sizeof(int32_t));
        hist[0] = y;
        m->seen[l]++;
        if (c->match && m->pointer[l] < 0 && m->seen[l] >= c->match) {
            int32_t found = m->where[match_hash(m, l)];
            m->pointer[l] = found;  /* the symbol that followed this context last time */
        }
        if (m->letter[y]) {
            m->word[l] = mix32(m->word[l] * 0x2F0B4A1Bu + m->letter[y]) | 1u;
        } else if (m->word[l]) {
            m->prevword[l] = m->word[l];
            m->word[l] = 0;
        }
        context_rows(m, l);
        ids[l] = y < V ? y : c->unk;
    }
    m->step++;
    return 0;
}

/* Code `steps` steps with the network of net.c; 0, or cm_step's error. */
int cm_run(Model *m, Net *n, int decoding, int steps) {
    for (int s = 0; s < steps; s++) {
        int status = cm_step(m, decoding, cm_net_forward(n), cm_net_inputs(n), cm_net_dlogits(n));
        if (status) return status;
        cm_net_advance(n, m->step < m->c.steps);
    }
    return 0;
}

/* ---- for the tests: the coder and the functions on their own ------------------------------- */

double cm_exp_of(double x) { return cm_exp(x); }
double cm_log_of(double x) { return cm_log(x); }

/* Code n symbols, the i-th with cumulative counts cum[i * (A + 1) ...]; returns the stream's
 * length (its bytes at *out, to free with cm_release), or -1 (a symbol outside 0..A-1, memory). */
int64_t cm_encode_with(const uint32_t *cum, int A, const int32_t *symbols, int64_t n, uint8_t **out) {
    Model m = {0};
    m.high = FULL;
    m.out_cap = 64;
    m.out = calloc(m.out_cap, 1);
    if (!m.out) return -1;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t *c = cum + i * (A + 1);
        int s = symbols[i];
        if (s < 0 || s >= A || encode(&m, c[s], c[s + 1], c[A])) { free(m.out); return -1; }
    }
    int64_t bytes = cm_finish(&m);
    *out = m.out;
    return bytes;
}

void cm_release(uint8_t *p) { free(p); }

/* The inverse: n symbols into `symbols`; 0, or -1 where the stream is damaged. */
int cm_decode_with(const uint32_t *cum, int A, int64_t n, const uint8_t *data, int64_t length,
                   int32_t *symbols) {
    Model m = {0};
    m.high = FULL;
    cm_set_input(&m, data, (size_t)length);
    for (int64_t i = 0; i < n; i++) {
        int s = decode(&m, cum + i * (A + 1), A);
        if (s < 0) return -1;
        symbols[i] = s;
    }
    return 0;
}
