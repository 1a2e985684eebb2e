/* The compressor's per-step work in one call: context experts, mixing, arithmetic coding, learning.
 *
 * charlm's compressor predicts each symbol with a recurrent network mixed with context experts.
 * Coding runs one step at a time, and a step done as some sixty small torch operations spends most
 * of its time dispatching them; this file does everything after the network's logits in one C
 * call per step (cm_step), and with the online mode's network in C too (net.c) a whole chunk of
 * steps per call (cm_run):
 *
 *   1. predict: each expert's log-probabilities for the next symbol of every lane: hashed order-k
 *      counts, word counts (the word so far; with the word before it), and the match expert (the
 *      symbol that followed the last occurrence of the current context);
 *   2. mix: geometric mixing, a product of experts, then a softmax:
 *        z = w_net[b] * logits + bias + sum_e (w[e][b_e] * log p_e + w_seen[e][b_e] * [c_e > 0]
 *                                               + w_last[e][b_e] * [seen last in e's context])
 *                                     + w_match[r] * 8 * [the match expert's symbol]
 *      where b_e is the confidence bucket of expert e's context (log2 of its count, and whether one,
 *      two or more symbols followed it), b that of the word expert (`netsel`) and r how many of the
 *      match expert's predictions in a row were right;
 *   3. refine_likeliest: an adaptive probability map refines the likeliest symbol's probability by
 *      what followed that probability after the same previous symbol before;
 *   4. code_symbol: the arithmetic coder (the same stream as reference_coder.py: Witten, Neal &
 *      Cleary, 32 bits), encoding or decoding: the symbol bit by bit, each bit's probability from q
 *      mixed again with bitwise context models (bits.c), or (with no bitwise models) the symbol
 *      whole under integer frequencies floor(q * (total - A)) + 1;
 *   5. learn_from, move_on: learning from the symbol: each mixing weight used takes an Adam step at
 *      once, the map and the counts learn it, and the network's gradient w_net * (p - onehot) is
 *      written out for the network's block update (net.c, or torch for a trained run).
 *
 * The decoder must compute bit-identical probabilities, so everything here is plain IEEE arithmetic
 * in a fixed order: no libm transcendental functions (exp and log are the polynomials below;
 * floor, frexp and sqrt are exact by definition), no fused multiply-adds (the build turns
 * contraction off, build.py), sums reduce in a fixed order. Integers hash the contexts.
 */
#define _DEFAULT_SOURCE  /* madvise (kernel.h), beside C11 */
#include "exact.h"    /* exp, log and squash, exact by construction */
#include "kernel.h"   /* Config, Model, the shared constants */
#include "net.c"      /* Net: the online mode's network, cm_net_* */
#include "deepnet.c"  /* Deep: the pretrained mode's network, cm_deep_* */
#include "bits.c"     /* Bits: the bitwise stage, bits_* */

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
    if (m->bits) bits_contexts(m->bits, hist, seen, m->word[l], l);
    /* The rows are read at the next step, after the network's forward pass: asked for now, they
     * arrive from memory meanwhile (a row of 256 counts is eight cache lines, in tables of 268 MB). */
    for (int x = 0; x < m->E; x++) {
        size_t at = (size_t)x * m->rows + rows[x];
        prefetch_span(m->counts + at * m->c.alphabet, (size_t)m->c.alphabet * sizeof(uint16_t));
        prefetch(m->sums + at);
        prefetch(m->distinct + at);
        prefetch(m->last + at);
    }
}

static uint32_t match_hash(const Model *m, int l) {
    return order_hash(m->hist + (size_t)l * HISTORY, m->c.match, 77u) & (m->match_rows - 1);
}

/* ---- the coder: exactly reference_coder.py's stream --------------------------------------- */

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

/* Every table is sized by the settings alone, never by the input's length (which a stream does not
 * know): calloc'd, so that pages no context reaches are never touched. The symbols come a segment at
 * a time (cm_segment). */
Model *cm_new(const Config *config, const uint8_t *letter, const uint8_t *glyph) {
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
    m->counts = big_table((size_t)m->E * m->rows * A + 1, sizeof(uint16_t));
    m->sums = calloc((size_t)m->E * m->rows + 1, sizeof(uint32_t));
    m->distinct = calloc((size_t)m->E * m->rows + 1, sizeof(uint16_t));
    m->last = calloc((size_t)m->E * m->rows + 1, sizeof(uint16_t));
    m->logc = calloc((size_t)c->limit + 1, sizeof(double));
    m->hist = calloc((size_t)L * HISTORY, sizeof(int32_t));
    m->seen = calloc(L, sizeof(int32_t));
    m->word = calloc(L, sizeof(uint32_t));
    m->prevword = calloc(L, sizeof(uint32_t));
    m->cur_rows = calloc((size_t)L * m->E + 1, sizeof(uint32_t));
    m->coded = calloc((size_t)1 << c->window_log2, sizeof(int32_t));
    m->where = calloc(m->match_rows, sizeof(int64_t));
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
    m->pun = malloc(A * sizeof(Pun));
    m->p = malloc(A * sizeof(double));
    m->q = malloc(A * sizeof(double));
    m->apm_contexts = c->apm == 2 ? 1u << 16 : (uint32_t)A;
    m->apm = malloc((size_t)m->apm_contexts * APM_KNOTS * sizeof(double));
    m->f = malloc((size_t)(m->E + 1) * A * sizeof(double));
    m->bucket = calloc(m->E + 1, sizeof(int32_t));
    m->lastsym = calloc(m->E + 1, sizeof(int32_t));
    m->cum = malloc((A + 1) * sizeof(uint32_t));
    m->out_cap = 4096;
    m->out = calloc(m->out_cap, 1);
    if (!m->counts || !m->sums || !m->distinct || !m->last || !m->lastsym || !m->logc || !m->hist || !m->seen || !m->word ||
        !m->prevword || !m->cur_rows || !m->coded || !m->where || !m->pointer || !m->run || !m->w ||
        !m->m1 || !m->m2 || !m->updates || !m->pow1 || !m->pow2 || !m->bias || !m->z || !m->pun || !m->p || !m->q || !m->apm || !m->f || !m->bucket ||
        !m->cum || !m->out) {
        cm_free(m);
        return NULL;
    }
    m->pow1[0] = m->pow2[0] = 1.0;  /* by repeated products: exact and libm-free */
    for (int i = 1; i < POWERS; i++) { m->pow1[i] = m->pow1[i - 1] * c->beta1; m->pow2[i] = m->pow2[i - 1] * c->beta2; }
    for (int v = 0; v <= c->limit; v++) m->logc[v] = cm_log(v + c->prior);
    m->lognorm_base = A * c->prior;
    for (int l = 0; l < L; l++) m->pointer[l] = -1;
    for (size_t i = 0; i < W; i++) {
        size_t slot = i / SLOTS;
        m->w[i] = slot == (size_t)m->X - 1 ? 1.0  /* the network's logits as they are */
                  : slot >= (size_t)m->E && slot < (size_t)3 * m->E ? 0.0 : c->mix_init;
    }
    for (int a = 0; a < A; a++) m->bias[a] = a < c->vocab ? 0.0 : c->extra_logit;
    for (uint32_t i = 0; i < m->apm_contexts; i++)  /* the identity to start with */
        for (int j = 0; j < APM_KNOTS; j++) m->apm[(size_t)i * APM_KNOTS + j] = apm_knot(j);
    for (int i = 0; i <= 256; i++) uniform_cum[i] = (uint32_t)i;
    m->c.steps = 0;
    m->letter = letter;
    m->high = FULL;
    if (c->bit_models > 0) {
        m->bits = bits_new(L, A, c->bit_models, c->bit_rows_log2, c->bit_lr, c->bit_limit, m->E, glyph);
        if (!m->bits) { cm_free(m); return NULL; }
    }
    for (int l = 0; l < L; l++) {
        for (int j = 0; j < HISTORY; j++) m->hist[(size_t)l * HISTORY + j] = c->start;
        context_rows(m, l);
    }
    return m;
}

void cm_free(Model *m) {
    if (!m) return;
    bits_free(m->bits);
    free(m->counts); free(m->sums); free(m->distinct); free(m->last); free(m->lastsym); free(m->logc); free(m->hist); free(m->seen);
    free(m->word); free(m->prevword); free(m->cur_rows); free(m->coded); free(m->where);
    free(m->pointer); free(m->run); free(m->w); free(m->m1); free(m->m2); free(m->updates);
    free(m->pow1); free(m->pow2);
    free(m->bias); free(m->z); free(m->pun); free(m->p); free(m->q); free(m->apm); free(m->f); free(m->bucket); free(m->cum); free(m->out);
    free(m);
}

/* The next segment: `steps` steps of L lanes, lane l's `lengths[l]` symbols at symbols[l * steps],
 * the bytes escapes carry at extra[(l * steps + t) * 4]. Positions (the match expert's) go on
 * from the segment before. */
void cm_segment(Model *m, int32_t *symbols, const int32_t *lengths, uint8_t *extra, uint8_t *extra_len,
                int32_t steps) {
    m->base += (int64_t)m->c.steps * m->c.lanes;
    m->c.steps = steps;
    m->step = 0;
    m->symbols = symbols;
    m->lengths = lengths;
    m->extra = extra;
    m->extra_len = extra_len;
}

/* The coder starts afresh: each segment is a stream of its own (the model goes on learning). */
void cm_restart(Model *m) {
    memset(m->out, 0, (m->out_bits + 7) / 8 + 1 < m->out_cap ? (m->out_bits + 7) / 8 + 1 : m->out_cap);
    m->out_bits = 0;
    m->pending = 0;
    m->low = 0;
    m->high = FULL;
}

/* The decoder reads `data`; it starts with the first 32 bits in `code`. */
void cm_set_input(Model *m, const uint8_t *data, size_t n) {
    m->low = 0;
    m->high = FULL;
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

/* ---- one step, in five stages ------------------------------------------------------------------ */

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

/* Where a mixing weight lives: `set` is which input it weighs (see Model.X), `bucket` the confidence
 * of that input's context; each set holds SLOTS weights. */
static size_t weight_at(int set, int bucket) {
    return (size_t)set * SLOTS + (size_t)bucket;
}

/* What one lane's step hands from each stage to the next. */
typedef struct {
    int lane;
    size_t at;              /* the symbol's place in `symbols`: lane * steps + t */
    const float *logits;    /* V: the network's logits for it */
    const uint32_t *rows;   /* E: each count expert's row, the hashed context */
    int net_slot;           /* the network's weight's bucket: the netsel expert's confidence */
    double w_net;           /* that weight */
    int predicted;          /* the match expert's symbol; -1 = it predicts none */
    int best;               /* the likeliest symbol under p */
    double *apm;            /* the map's row the refinement read (APM_KNOTS knots); NULL = not refined */
    size_t knot;            /* the knot left of the likeliest probability's stretch, */
    double frac;            /* and how far past it (0..1) */
    const double *q;        /* the probabilities the coder uses: p, or m->q where the map refined p */
    int y;                  /* the symbol coded */
} Step;

/* Stage 1, the experts. Each count expert's log-probabilities log(c_a + prior) - log(n + A * prior)
 * from its row (into f: the prior keeps an unseen symbol possible), the confidence bucket of the
 * row (log2 of its count and whether one, two or more symbols followed it: a context seen once
 * means something other than one seen often, so each bucket gets weights of its own), and the
 * symbol it saw last. The match expert: the symbol that followed the last occurrence of this
 * context, bucketed by how many of its predictions in a row were right. */
static void predict(Model *m, Step *s) {
    const Config *c = &m->c;
    const int A = c->alphabet;
    for (int e = 0; e < m->E; e++) {
        size_t at = (size_t)e * m->rows + s->rows[e];
        const uint16_t *cnt = m->counts + at * A;
        uint32_t n = m->sums[at];
        double norm = cm_log(n + m->lognorm_base);
        int kind = m->distinct[at] == 1 ? 1 : m->distinct[at] == 2 && c->kinds > 2 ? 2 : 0;
        m->bucket[e] = bucket_of(n) + kind * NUM_BUCKETS;
        double *f = m->f + (size_t)e * A;
        for (int a = 0; a < A; a++) f[a] = m->logc[cnt[a]] - norm;
        m->lastsym[e] = n ? m->last[at] : -1;
    }
    s->predicted = -1;
    if (c->match) {
        /* a pointer into the ring's last `window` positions; an older one has been written over */
        int64_t ptr = m->pointer[s->lane], now = m->base + (int64_t)m->step * c->lanes + s->lane;
        if (ptr >= 0 && ptr < now && now - ptr <= ((int64_t)1 << c->window_log2))
            s->predicted = m->coded[ptr & (((int64_t)1 << c->window_log2) - 1)];
        m->bucket[m->E] = m->run[s->lane] < NUM_BUCKETS - 1 ? m->run[s->lane] : NUM_BUCKETS - 1;
    }
}

/* The network's weight, chosen by the confidence of one expert's context (`netsel`): where the
 * counts know the context well, the network matters less. */
static void network_weight(const Model *m, Step *s) {
    const Config *c = &m->c;
    s->net_slot = 0;
    if (c->netsel >= 0 && c->netsel < m->E) {
        size_t at = (size_t)c->netsel * m->rows + s->rows[c->netsel];
        s->net_slot = bucket_of(m->sums[at]) + (m->distinct[at] == 1 ? NUM_BUCKETS : 0);
    }
    s->w_net = m->w[weight_at(m->X - 1, s->net_slot)];
}

/* p = softmax(z), shifted by the largest logit so that exp never overflows; `pun`: n of scratch. */
static void softmax(const double *z, double *p, int n, Pun *pun) {
    double top = z[0];
    for (int a = 1; a < n; a++) if (z[a] > top) top = z[a];
    for (int a = 0; a < n; a++) p[a] = z[a] - top;
    exps(p, pun, n);
    double sum = 0.0;
    for (int a = 0; a < n; a++) sum += p[a];
    for (int a = 0; a < n; a++) p[a] /= sum;
}

/* Stage 2, geometric mixing: a product of the experts, each raised to a learned weight, is a sum
 * of their weighted log-probabilities (formula at the top of this file); the symbols the network
 * has no logit for (the escapes) start from a learned bias instead. Then p = softmax(z). */
static void mix(Model *m, Step *s) {
    const Config *c = &m->c;
    const int A = c->alphabet, V = c->vocab, E = m->E;
    const double *w = m->w;
    double *z = m->z;
    network_weight(m, s);
    for (int a = 0; a < V; a++) z[a] = s->w_net * s->logits[a];
    for (int a = V; a < A; a++) z[a] = m->bias[a];
    for (int e = 0; e < E; e++) {
        int b = m->bucket[e];
        double we = w[weight_at(e, b)];
        /* seen in this context at all: a learned escape, per bucket */
        double ws = (c->features & 1) ? w[weight_at(E + e, b)] : 0.0;
        const uint16_t *cnt = m->counts + ((size_t)e * m->rows + s->rows[e]) * A;
        const double *f = m->f + (size_t)e * A;
        for (int a = 0; a < A; a++) z[a] += we * f[a] + (cnt[a] ? ws : 0.0);
        if ((c->features & 2) && m->lastsym[e] >= 0) z[m->lastsym[e]] += w[weight_at(2 * E + e, b)];
    }
    if (s->predicted >= 0) z[s->predicted] += w[weight_at(3 * E, m->bucket[E])] * MATCH_SCALE;
    softmax(z, m->p, A, m->pun);
}

/* Stage 3, an adaptive probability map: the likeliest symbol's probability, looked up by its
 * stretch ln(p / (1 - p)) between APM_KNOTS knots of a row chosen by the previous symbol(s), learns what
 * actually followed such a probability in such a context; the final probability blends the two
 * (apm_weight), and the other symbols share the rest in their old ratios. It corrects the mixer
 * where it is systematically over- or under-confident. */
static void refine_likeliest(Model *m, Step *s) {
    const Config *c = &m->c;
    const int A = c->alphabet;
    const double *p = m->p;
    s->q = p;
    s->apm = NULL;
    s->best = 0;
    for (int a = 1; a < A; a++) if (m->z[a] > m->z[s->best]) s->best = a;
    double pb = p[s->best];
    if (!(c->apm && pb < 1.0 - 1e-9 && pb > 1e-9)) return;  /* off, or a stretch of no use */
    const int32_t *hist = m->hist + (size_t)s->lane * HISTORY;
    uint32_t ctx = c->apm == 2 ? order_hash(hist, 2, 99u) >> 16 : (uint32_t)hist[0];
    double st = cm_log(pb / (1.0 - pb));
    st = st < -7.999 ? -7.999 : st > 7.999 ? 7.999 : st;
    double pos = (st + 8.0) * 2.0;  /* knots at stretches -8, -7.5, ..., 8 */
    s->knot = (size_t)floor(pos);
    s->frac = pos - s->knot;
    s->apm = m->apm + (size_t)ctx * APM_KNOTS;
    double refined = (1.0 - s->frac) * s->apm[s->knot] + s->frac * s->apm[s->knot + 1];
    double pn = (1.0 - c->apm_weight) * pb + c->apm_weight * refined;
    pn = pn < 1e-6 ? 1e-6 : pn > 1.0 - 1e-6 ? 1.0 - 1e-6 : pn;
    double rest = (1.0 - pn) / (1.0 - pb);
    double *q = m->q;
    for (int a = 0; a < A; a++) q[a] = p[a] * rest;
    q[s->best] = pn;
    s->q = q;
}

/* Integer frequencies floor(q * (total - A)) + 1 as cumulative counts: at least 1 each, so that any
 * symbol can be coded, and one multiply and a floor in float64, so both sides get the same. */
static const uint32_t *frequencies(Model *m, const double *q) {
    const int A = m->c.alphabet;
    uint32_t *cum = m->cum;
    double scale = (double)(m->c.total - A);
    cum[0] = 0;
    for (int a = 0; a < A; a++) cum[a + 1] = cum[a] + (uint32_t)floor(q[a] * scale) + 1u;
    return cum;
}

/* An escape's bytes (a character's UTF-8, or one byte that is not UTF-8), each under the fixed
 * uniform model: nothing has learned to predict what the vocabulary lacks. */
static int code_escape(Model *m, int decoding, size_t at, int one_byte) {
    uint8_t *bytes = m->extra + at * 4;
    int first = code_byte(m, decoding, bytes[0]);
    if (first < 0) return decoding ? -1 : -2;
    int n = one_byte ? 1 : utf8_length(first);
    if (decoding) { bytes[0] = (uint8_t)first; m->extra_len[at] = (uint8_t)n; }
    for (int i = 1; i < n; i++) {
        int v = code_byte(m, decoding, bytes[i]);
        if (v < 0) return decoding ? -1 : -2;
        bytes[i] = (uint8_t)v;
    }
    return 0;
}

/* Stage 4, the arithmetic coder: the encoder codes the given symbol under q's frequencies, the
 * decoder finds it from them (both narrow the interval alike), then any bytes an escape carries.
 * 0, -1 for a damaged stream or a symbol outside the alphabet, -2 for memory. */
static int code_symbol(Model *m, int decoding, Step *s) {
    const Config *c = &m->c;
    const int A = c->alphabet;
    if (m->bits) {
        if (!decoding && (m->symbols[s->at] < 0 || m->symbols[s->at] >= A)) return -1;
        int prev = m->hist[(size_t)s->lane * HISTORY];
        int y = bits_code(m, m->bits, decoding, s->lane, decoding ? 0 : m->symbols[s->at], s->q, prev,
                          s->rows, s->logits);
        if (y == -2) return -2;
        if (y < 0 || y >= A) return -1;
        s->y = y;
        if (decoding) m->symbols[s->at] = y;
    } else if (decoding) {
        const uint32_t *cum = frequencies(m, s->q);
        s->y = decode(m, cum, A);
        if (s->y < 0) return -1;
        m->symbols[s->at] = s->y;
    } else {
        const uint32_t *cum = frequencies(m, s->q);
        s->y = m->symbols[s->at];
        if (s->y < 0 || s->y >= A) return -1;
        if (encode(m, cum[s->y], cum[s->y + 1], cum[A])) return -2;
    }
    if (s->y != c->esc_char && s->y != c->esc_byte) return 0;
    return code_escape(m, decoding, s->at, s->y == c->esc_byte);
}

/* The map's two knots move towards what happened: 1 if the likeliest symbol came, else 0. */
static void learn_map(Model *m, const Step *s) {
    if (!s->apm) return;
    double hit = s->y == s->best ? 1.0 : 0.0, rate = m->c.apm_rate;
    s->apm[s->knot] += rate * (1.0 - s->frac) * (hit - s->apm[s->knot]);
    s->apm[s->knot + 1] += rate * s->frac * (hit - s->apm[s->knot + 1]);
}

/* The code length -log p(y)'s gradient with respect to the network's logits, w_net * (p - onehot y),
 * for the network's block update (net.c, or torch); the escapes' biases take a plain SGD step on
 * theirs (Adam would push unseen escapes down a step per symbol). */
static void network_gradient(Model *m, const Step *s, float *g) {
    const int A = m->c.alphabet, V = m->c.vocab;
    const double *p = m->p;
    for (int a = 0; a < V; a++) g[a] = (float)(s->w_net * (p[a] - (a == s->y)));
    for (int a = V; a < A; a++) m->bias[a] -= 0.5 * (p[a] - (a == s->y));
}

/* The code length's gradient with respect to the weight of input set `set` used for this symbol,
 * and where that weight lives: d/dw of -log p(y) is E_p[x] - x_y, x the input the weight scales.
 * 0 where the set took no part (a feature off, an empty row, no match). */
static int mixing_gradient(const Model *m, const Step *s, int set, double *gw, size_t *wi) {
    const int A = m->c.alphabet, V = m->c.vocab, E = m->E, y = s->y;
    const double *p = m->p;
    if (set < E) {  /* the log-probabilities */
        *gw = dot(p, m->f + (size_t)set * A, A) - m->f[(size_t)set * A + y];
        *wi = weight_at(set, m->bucket[set]);
    } else if (set < 2 * E) {  /* seen in the context */
        if (!(m->c.features & 1)) return 0;
        const uint16_t *cnt = m->counts + ((size_t)(set - E) * m->rows + s->rows[set - E]) * A;
        *gw = seen_mass(p, cnt, A) - (cnt[y] ? 1.0 : 0.0);
        *wi = weight_at(set, m->bucket[set - E]);
    } else if (set < 3 * E) {  /* seen last in the context */
        int last = m->lastsym[set - 2 * E];
        if (!(m->c.features & 2) || last < 0) return 0;
        *gw = p[last] - (last == y);
        *wi = weight_at(set, m->bucket[set - 2 * E]);
    } else if (set == 3 * E) {  /* the match */
        if (s->predicted < 0) return 0;
        *gw = MATCH_SCALE * (p[s->predicted] - (s->predicted == y));
        *wi = weight_at(set, m->bucket[E]);
    } else {  /* the network */
        *gw = 0.0;
        for (int a = 0; a < V; a++) *gw += p[a] * s->logits[a];
        *gw -= y < V ? s->logits[y] : 0.0;
        *wi = weight_at(set, s->net_slot);
    }
    return 1;
}

/* One Adam step (Kingma & Ba, 2015) for weight `wi`, at once: a weight learns from every symbol
 * it weighed, and its step count corrects the moments' bias (beta^n from the tables). */
static void adam_step(Model *m, size_t wi, double gw) {
    const Config *c = &m->c;
    int n = ++m->updates[wi];
    m->m1[wi] = c->beta1 * m->m1[wi] + (1 - c->beta1) * gw;
    m->m2[wi] = c->beta2 * m->m2[wi] + (1 - c->beta2) * gw * gw;
    double c1 = n < POWERS ? m->pow1[n] : 0.0, c2 = n < POWERS ? m->pow2[n] : 0.0;
    double mh = m->m1[wi] / (1 - c1), vh = m->m2[wi] / (1 - c2);
    m->w[wi] -= c->mix_lr * mh / (sqrt(vh) + 1e-8);
}

/* Stage 5, learning from the symbol, in this order (the decoder repeats it): the map, the network's
 * gradient, each mixing weight used; then move_on: the counts and the contexts. */
static void learn_from(Model *m, const Step *s, float *g) {
    learn_map(m, s);
    network_gradient(m, s, g);
    for (int set = 0; set < m->X; set++) {
        double gw;
        size_t wi;
        if (mixing_gradient(m, s, set, &gw, &wi)) adam_step(m, wi, gw);
    }
}

/* The counts take the symbol in; the match expert follows its pointer on where it was right and
 * looks the new context up where it was not; the history, the words and every expert's row move
 * on to the context of the lane's next symbol. */
static void move_on(Model *m, const Step *s) {
    const Config *c = &m->c;
    const int l = s->lane, y = s->y;
    for (int e = 0; e < m->E; e++) count(m, e, s->rows[e], y);
    int64_t position = m->base + (int64_t)m->step * c->lanes + l;
    m->coded[position & (((int64_t)1 << c->window_log2) - 1)] = y;
    if (c->match) {  /* the context before y now points at y */
        int hit = s->predicted == y;
        m->run[l] = hit ? m->run[l] + 1 : 0;
        m->pointer[l] = hit ? m->pointer[l] + c->lanes : -1;
        if (m->seen[l] >= c->match) m->where[match_hash(m, l)] = position + 1;
    }
    int32_t *hist = m->hist + (size_t)l * HISTORY;
    memmove(hist + 1, hist, (HISTORY - 1) * sizeof(int32_t));
    hist[0] = y;
    if (m->seen[l] < (1 << 30)) m->seen[l]++;  /* saturated: only "at least k" is ever asked */
    if (c->match && m->pointer[l] < 0 && m->seen[l] >= c->match)
        m->pointer[l] = m->where[match_hash(m, l)] - 1;  /* what followed this context last time */
    if (m->letter[y]) {
        m->word[l] = mix32(m->word[l] * 0x2F0B4A1Bu + m->letter[y]) | 1u;
    } else if (m->word[l]) {
        m->prevword[l] = m->word[l];
        m->word[l] = 0;
    }
    context_rows(m, l);
}

/* Code step `step` of every lane. `lm` holds the network's logits (L x vocab, float32); on return
 * `ids` (L) holds the network's next inputs and `grad` (L x vocab) the gradient of the code length
 * with respect to the logits (zero for a lane that has ended). 0, or -1 for a damaged stream, -2
 * for memory. */
int cm_step(Model *m, int decoding, const float *lm, int64_t *ids, float *grad) {
    const Config *c = &m->c;
    for (int l = 0; l < c->lanes; l++) {
        float *g = grad + (size_t)l * c->vocab;
        if (m->step >= m->lengths[l]) {  /* the lane has ended */
            memset(g, 0, (size_t)c->vocab * sizeof(float));
            continue;
        }
        Step s = {.lane = l, .at = (size_t)l * c->steps + m->step, .logits = lm + (size_t)l * c->vocab,
                  .rows = m->cur_rows + (size_t)l * m->E};
        predict(m, &s);                             /* 1. each expert's view of the next symbol */
        mix(m, &s);                                 /* 2. one distribution p */
        refine_likeliest(m, &s);                    /* 3. q: p, its likeliest symbol corrected */
        int status = code_symbol(m, decoding, &s);  /* 4. the symbol y, coded under q */
        if (status) return status;
        learn_from(m, &s, g);                       /* 5. learning from y, */
        move_on(m, &s);                             /*    then the next context */
        ids[l] = s.y < c->vocab ? s.y : c->unk;
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

/* The same with the pretrained mode's network, deepnet.c's. */
int cm_run_deep(Model *m, Deep *d, int decoding, int steps) {
    for (int s = 0; s < steps; s++) {
        int status = cm_step(m, decoding, cm_deep_forward(d), cm_deep_inputs(d), cm_deep_dlogits(d));
        if (status) return status;
        cm_deep_advance(d, m->step < m->c.steps);
    }
    return 0;
}

/* ---- for the tests: the coder and the functions on their own ------------------------------- */

double cm_exp_of(double x) { return cm_exp(x); }
double cm_squash_of(double x) { return squash(x); }

/* exact.h's array exps() and squashes() over n <= 4096 values, to hold them to cm_exp and squash bit
 * for bit. */
void cm_exps(const double *x, double *out, int n) {
    static Pun pun[4096];
    memcpy(out, x, (size_t)n * sizeof(double));
    exps(out, pun, n);
}

void cm_squashes(const double *x, double *out, int n) {
    static Pun pun[2 * 4096];
    memcpy(out, x, (size_t)n * sizeof(double));
    squashes(out, pun, n);
}
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

