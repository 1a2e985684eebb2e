/* The last stage: each symbol coded as its bits, each bit's probability mixed again with bitwise
 * context models (the design of PAQ and its kin: Mahoney, "Adaptive weighing of context models for
 * lossless data compression", 2005).
 *
 * The symbol mixture q (kernel.c) gives every bit of the symbol's code a probability: the mass of
 * the symbols whose code goes on with a 1, over the mass of those that share the bits so far. Each
 * bit is then predicted anew from inputs in the logistic domain, stretch(p) = ln(p / (1 - p)):
 *
 *   - that probability, and the same from each count expert's row and from the network alone;
 *   - bitwise context models: for a context (the last k symbols, the word so far, the column and
 *     the symbol above it, ...) and the bits of this symbol so far, a slot with the probability
 *     that a 1 follows, which moves towards each bit by 1 / (n + 1.5), n the times it was seen
 *     (capped), and the slot's last bits, whose short history an adaptive map turns into a second
 *     probability (what followed such a history in this model before);
 *
 * mixed by five logistic mixers, each with its weights chosen by a context of its own (the bits
 * so far; how many orders know this context; the previous symbol; the column and whether the line
 * is longer than the one before; how many letters into its word the symbol is), whose outputs a
 * second layer mixes by node. Two adaptive
 * probability maps (by the previous symbol, by the previous two) refine the result, and the
 * arithmetic coder codes the bit under it. Everything learns from the bit at once.
 *
 * Bitwise models adapt within a few occurrences where the symbol experts' counts take many, and
 * they are cheap: a slot per context per bit, sixteen slots (one cache line) per context per half
 * symbol, instead of a row of A counts; so contexts the symbol experts could not afford are here.
 * The column contexts matter most on hard-wrapped text such as most e-books: where a line will
 * break, and what stands above.
 *
 * Like the rest of the kernel, plain IEEE arithmetic in a fixed order: stretch from cm_log (or a
 * table made with it), squash with cm_exp, integer slots. Weights and maps are kept as differences
 * from their starting values, so that memory nobody has used is zero and never touched.
 */

#define BIT_INPUTS_MAX 64
#define STRETCH_BITS 12
#define MIXERS 5               /* first-layer mixers, each choosing its weights by its own context */
#define MAX_SETS (1u << 16)    /* weight sets of a mixer at most */
#define APM2_ROWS (1u << 18)   /* the second map's rows (hashed) */
#define LINE 256               /* columns remembered of a line */
#define ORDERS_KNOWN 6         /* models 1..6 are orders 1..6: their confidence picks mixer 1's set */

typedef struct {               /* what the bitwise contexts follow in one lane */
    uint32_t words[3];         /* hashes of the current word and the two before it */
    uint8_t line[LINE], above[LINE];
    int32_t col, width;        /* the current column; the length of the line before */
    int32_t letters;           /* letters of the current word so far */
    uint32_t nest;             /* inside quotes or brackets */
    uint8_t norm[8];           /* the last symbols, case folded, each run of white space one space */
} BitLane;

typedef struct Bits {
    int nbits;                 /* bits per symbol: the alphabet's size rounded up to a power of two */
    int models, experts;       /* bitwise context models; count experts (kernel.c) */
    int inputs;                /* mixer inputs: q, a slot and a history per model, experts, network, bias */
    uint32_t mask;             /* buckets per model - 1 */
    uint32_t *slots;           /* models * buckets * 16: a bucket's word 0 checks its context; words
                                  1..15 the nodes of a half symbol: P(1) (16 bits), times seen (8),
                                  the last 8 bits */
    double *hmap;              /* models * 512: P(1) after a slot's history (its last bits, all of
                                  them while it has seen fewer than 8) */
    int32_t *hmap_n;
    uint32_t *ctx;             /* L * models: each model's context for the lane's next symbol */
    BitLane *lane;             /* L */
    uint16_t *follow;          /* 65536: the two symbols that followed each pair last */
    const uint8_t *glyph;      /* A: a symbol's byte (ASCII, or a stand-in) for the text contexts */
    uint32_t sets[MIXERS];     /* weight sets per mixer */
    double *w[MIXERS];         /* sets * inputs: each mixer's weights, less their start (1 for q) */
    double *w2;                /* nodes * MIXERS: the second layer's, less their start (1 / MIXERS) */
    double *tree;              /* 2 * 2 * nodes: the mass below each node, of q and of the network's */
    uint32_t *ctree;           /* experts * 2 * nodes: the counts below each node, of each expert's row */
    double *apm;               /* apm_rows * APM_KNOTS: the first map, by the previous symbol and node */
    float *apm2;               /* APM2_ROWS * APM_KNOTS: the second, by the previous two symbols and node */
    uint32_t apm_rows;
    double knots[APM_KNOTS];   /* a map's starting values: the identity */
    int32_t rate[256];         /* 65536 / (n + 1.5): how far a slot seen n times moves */
    double stretch[1 << STRETCH_BITS];
    double lr;                 /* the mixers' learning rate, after the first bits */
    int limit;                 /* a slot's count stops here: recent bits keep weighing */
    int64_t coded;             /* bits coded so far */
} Bits;

static double stretch_of(double p) {
    p = p < 1e-6 ? 1e-6 : p > 1.0 - 1e-6 ? 1.0 - 1e-6 : p;
    return cm_log(p / (1.0 - p));
}

static double table_stretch(const Bits *b, double p) {  /* 12 bits of p are enough here */
    int k = (int)(p * (1 << STRETCH_BITS));
    return b->stretch[k < 0 ? 0 : k > (1 << STRETCH_BITS) - 1 ? (1 << STRETCH_BITS) - 1 : k];
}

static void bits_free(Bits *b) {
    if (!b) return;
    free(b->slots); free(b->hmap); free(b->hmap_n); free(b->ctx); free(b->lane); free(b->follow);
    for (int r = 0; r < MIXERS; r++) free(b->w[r]);
    free(b->w2); free(b->tree); free(b->ctree); free(b->apm); free(b->apm2);
    free(b);
}

static uint32_t capped(uint64_t wanted) { return wanted < MAX_SETS ? (uint32_t)wanted : MAX_SETS; }

/* NULL for memory, or more models than the mixers take. */
static Bits *bits_new(int lanes, int alphabet, int models, int buckets_log2, double lr, int limit,
                      int experts, const uint8_t *glyph) {
    Bits *b = calloc(1, sizeof(Bits));
    if (!b) return NULL;
    while ((1 << b->nbits) < alphabet) b->nbits++;
    b->models = models;
    b->experts = experts;
    b->inputs = 2 * models + experts + 3;
    if (b->inputs > BIT_INPUTS_MAX || limit > 255) { free(b); return NULL; }
    b->mask = (1u << buckets_log2) - 1;
    b->lr = lr;
    b->limit = limit;
    b->glyph = glyph;
    size_t nodes = (size_t)1 << b->nbits;
    b->apm_rows = capped((uint64_t)nodes * 256);
    b->sets[0] = (uint32_t)nodes;                          /* the bits so far */
    b->sets[1] = (ORDERS_KNOWN + 1) * 16;                  /* orders that know the context, bit */
    b->sets[2] = capped((uint64_t)256 << b->nbits);         /* the previous symbol, the bits so far */
    b->sets[3] = capped((uint64_t)(2 * 41) << b->nbits);    /* column, longer than above, bits */
    b->sets[4] = capped((uint64_t)16 << b->nbits);          /* letters into the word, bits */
    /* calloc: zero is every table's start (a bucket whose check fails starts afresh), so pages that
     * no context reaches are never touched */
    b->slots = big_table(((size_t)models << buckets_log2) * 16, sizeof(uint32_t));
    b->hmap = malloc((size_t)models * 512 * sizeof(double));
    b->hmap_n = calloc((size_t)models * 512, sizeof(int32_t));
    b->ctx = calloc((size_t)lanes * models + 1, sizeof(uint32_t));
    b->lane = calloc((size_t)lanes, sizeof(BitLane));
    b->follow = calloc(65536, sizeof(uint16_t));
    int ok = b->slots && b->hmap && b->hmap_n && b->ctx && b->lane && b->follow;
    for (int r = 0; r < MIXERS; r++) ok = ok && (b->w[r] = calloc((size_t)b->sets[r] * b->inputs, sizeof(double)));
    b->w2 = calloc(nodes * MIXERS, sizeof(double));
    b->tree = calloc((size_t)2 * 2 * nodes, sizeof(double));
    b->ctree = calloc((size_t)experts * 2 * nodes + 1, sizeof(uint32_t));
    b->apm = calloc((size_t)b->apm_rows * APM_KNOTS, sizeof(double));
    b->apm2 = calloc((size_t)APM2_ROWS * APM_KNOTS, sizeof(float));
    if (!ok || !b->w2 || !b->tree || !b->ctree || !b->apm || !b->apm2) { bits_free(b); return NULL; }
    for (size_t i = 0; i < (size_t)models * 512; i++) b->hmap[i] = 0.5;
    for (int n = 0; n < 256; n++) b->rate[n] = (int32_t)(65536.0 / (n + 1.5));
    for (int i = 0; i < (1 << STRETCH_BITS); i++) b->stretch[i] = stretch_of((i + 0.5) / (1 << STRETCH_BITS));
    for (int j = 0; j < APM_KNOTS; j++) b->knots[j] = apm_knot(j);
    return b;
}

/* ---- the slots' buckets ---------------------------------------------------------------------- */

/* Model j's bucket for context `ctx` and the half symbol that starts at `node`, and the check
 * that its word 0 holds while the bucket belongs to that context. */
static uint32_t *bucket_of_half(const Bits *b, int j, uint32_t ctx, uint32_t node, uint32_t *check) {
    uint32_t h = mix32(ctx + node * 0x9E3779B1u);
    *check = (h >> 24) | 0x100u;
    return b->slots + ((size_t)j * (b->mask + 1) + (h & b->mask)) * 16;
}

/* The buckets of a half symbol that will start at `node`, asked for from memory ahead (a bucket is
 * one cache line, in tables of 352 MB). */
static void prefetch_buckets(const Bits *b, const uint32_t *ctx, uint32_t node) {
    for (int j = 0; j < b->models; j++) {
        uint32_t check;
        prefetch(bucket_of_half(b, j, ctx[j], node, &check));
    }
}

/* ---- the contexts ------------------------------------------------------------------------------ */

/* The lane's text state takes in the symbol just coded (hist[0]). */
static void follow_text(Bits *b, BitLane *s, const int32_t *hist, int seen) {
    const uint8_t *g = b->glyph;
    int y = g[hist[0]];
    if (y == '\n') {  /* a new line: the one just ended is above it */
        memcpy(s->above, s->line, LINE);
        s->width = s->col;
        s->col = 0;
    } else {
        if (s->col < LINE) s->line[s->col] = (uint8_t)y;
        s->col++;
    }
    if (seen > 1) {  /* what followed the pair before this symbol */
        uint16_t *f = b->follow + ((uint32_t)g[hist[2]] << 8 | g[hist[1]]);
        *f = (uint16_t)(*f << 8 | (uint32_t)y);
    }
    int is_letter = (y >= 'a' && y <= 'z') || (y >= 'A' && y <= 'Z') || y >= 128;
    s->letters = is_letter ? s->letters + 1 : 0;
    if (y == '"') s->nest ^= 1u;
    else if (y == '(') s->nest |= 2u;
    else if (y == ')') s->nest &= ~2u;
    else if (y == '\'') s->nest ^= 4u;
    int c = y == '\n' || y == '\r' || y == '\t' ? ' ' : y >= 'A' && y <= 'Z' ? y + 32 : y;
    if (!(c == ' ' && s->norm[0] == ' ')) {
        memmove(s->norm + 1, s->norm, 7);
        s->norm[0] = (uint8_t)c;
    }
}

static uint32_t hash3(uint32_t a, uint32_t b, uint32_t c, uint32_t salt) {
    return mix32(a * 0x9E3779B1u + b * 0x85EBCA6Bu + c * 0x2F0B4A1Bu + salt);
}

/* Each model's context for the lane's next symbol, after kernel.c's move_on (hist[0] the symbol
 * just coded; seen = 0 before the first). `word`: the hash of the word so far, 0 between words. */
static void bits_contexts(Bits *b, const int32_t *hist, int seen, uint32_t word, int l) {
    BitLane *s = b->lane + l;
    const uint8_t *g = b->glyph;
    if (word == 0 && s->words[0] != 0) {  /* a word just ended */
        s->words[2] = s->words[1];
        s->words[1] = s->words[0];
    }
    s->words[0] = word;
    if (seen > 0) follow_text(b, s, hist, seen);
    uint32_t n3 = (uint32_t)s->norm[0] | (uint32_t)s->norm[1] << 8 | (uint32_t)s->norm[2] << 16;
    uint32_t n5 = (uint32_t)s->norm[3] | (uint32_t)s->norm[4] << 8;
    uint32_t ind = b->follow[(uint32_t)g[hist[1]] << 8 | g[hist[0]]];
    uint32_t col = (uint32_t)(s->col < LINE - 1 ? s->col : LINE - 1);
    uint32_t up = s->col < s->width && s->col < LINE ? s->above[s->col] : 0u;
    uint32_t cur = word ? word : (uint32_t)hist[0] + 0x10000u, h0 = (uint32_t)hist[0];
    uint32_t c[BIT_INPUTS_MAX];
    int j = 0;
    c[j++] = 0;                                                     /* order 0 */
    for (int k = 1; k <= ORDERS_KNOWN; k++) c[j++] = order_hash(hist, k < seen ? k : seen, 40u + k);
    c[j++] = mix32(cur * 0x9E3779B1u + 501u);                       /* the word so far */
    c[j++] = mix32(cur + 0x5bd1e995u * s->words[1] + 502u);         /* and the word before */
    c[j++] = hash3(mix32(cur + 0x5bd1e995u * s->words[1]), s->words[2], 0, 503u);  /* and the one before */
    c[j++] = hash3((uint32_t)hist[1], (uint32_t)hist[2], 0, 504u);  /* sparse: two and three back */
    c[j++] = hash3(up, col, 0, 505u);                               /* the column, the symbol above */
    c[j++] = hash3(up, h0, 0, 506u);                                /* the symbol above, the last one */
    c[j++] = hash3(s->line[0], col, h0, 507u);                      /* the line's first, column, last */
    c[j++] = hash3(ind, h0, 0, 508u);                               /* what followed this pair before */
    c[j++] = hash3(h0, (uint32_t)hist[2], 0, 509u);                 /* sparse: one and three back */
    c[j++] = hash3(s->words[1], order_hash(hist, 2, 7u), 0, 510u);  /* the word before, order 2 */
    c[j++] = hash3(s->nest, h0, cur, 511u);                         /* quotes and brackets, the word */
    c[j++] = hash3((uint32_t)hist[3], (uint32_t)hist[2], (uint32_t)hist[1], 512u);  /* sparse */
    c[j++] = mix32(n3 * 0x9E3779B1u + 513u);                        /* folded order 3 */
    c[j++] = mix32(mix32(n3 + 514u) + n5 * 0x85EBCA6Bu);            /* folded order 5 */
    uint32_t *ctx = b->ctx + (size_t)l * b->models;
    for (int k = 0; k < b->models; k++) ctx[k] = k < j ? c[k] : 0u;
    prefetch_buckets(b, ctx, 1);  /* the next symbol's first half: read after its network step */
}

/* ---- one bit ----------------------------------------------------------------------------------- */

/* The mass of q below every node of the binary tree over the symbols' codes (leaves past the
 * alphabet hold none). */
static void bits_tree(double *t, size_t nodes, const double *q, int A) {
    for (size_t a = 0; a < nodes; a++) t[nodes + a] = (int)a < A ? q[a] : 0.0;
    for (size_t i = nodes - 1; i >= 1; i--) t[i] = t[2 * i] + t[2 * i + 1];
}

/* The same over a count expert's row, in integers: sums of counts are exact in any order, so these
 * are the very values a tree of doubles would hold, at a fraction of the cost (they vectorise). */
static void counts_tree(uint32_t *t, size_t nodes, const uint16_t *cnt, int A) {
    for (size_t a = 0; a < nodes; a++) t[nodes + a] = (int)a < A ? cnt[a] : 0u;
    for (size_t level = nodes / 2; level >= 1; level /= 2)
        for (size_t i = level; i < 2 * level; i++) t[i] = t[2 * i] + t[2 * i + 1];
}

/* The input a tree gives at a node: the stretch of the share of the node's mass that goes on with
 * a 1; nothing (0) where the node holds no mass. */
static double split_input(double below, double one, double prior) {
    if (!(below > 0)) return 0.0;
    return stretch_of((one + prior) / (below + 2 * prior));
}

static double tree_input(const double *t, uint32_t node, double prior) {
    return split_input(t[node], t[2 * node + 1], prior);
}

static double counts_input(const uint32_t *t, uint32_t node, double prior) {
    return split_input((double)t[node], (double)t[2 * node + 1], prior);
}

/* An adaptive probability map's row: p's stretch between APM_KNOTS knots (-8, -7.5, ..., 8). */
typedef struct { size_t knot; double frac; } Knot;

static Knot knot_of(double st) {
    st = st < -7.999 ? -7.999 : st > 7.999 ? 7.999 : st;
    double pos = (st + 8.0) * 2.0;
    Knot k = {(size_t)floor(pos), 0.0};
    k.frac = pos - k.knot;
    return k;
}

/* What one bit's prediction hands to its learning. */
typedef struct {
    double x[BIT_INPUTS_MAX];
    uint32_t *slot[BIT_INPUTS_MAX], state[BIT_INPUTS_MAX];
    double *w[MIXERS], s1[MIXERS], p1[MIXERS], pm;
    double *v, rate;
    Knot k;
    double *row;
    float *row2;
} Bit;

/* The inputs at `node`: the distributions' trees and each model's slot (`bucket`: the model's
 * bucket for this half symbol, `local` the node inside it). */
static void bit_inputs(Bits *b, Bit *t, uint32_t node, uint32_t local, uint32_t *const *bucket) {
    const int M = b->models, E = b->experts;
    const size_t nodes = (size_t)1 << b->nbits;
    t->x[0] = tree_input(b->tree, node, 0.0);
    for (int e = 0; e < E; e++) t->x[1 + M + e] = counts_input(b->ctree + (size_t)e * 2 * nodes, node, 0.05);
    t->x[1 + M + E] = tree_input(b->tree + 2 * nodes, node, 0.0);
    for (int j = 0; j < M; j++) {
        uint32_t *slot = t->slot[j] = bucket[j] + local, v = *slot;
        uint32_t n = (v >> 8) & 255;
        t->x[1 + j] = n ? b->stretch[v >> (32 - STRETCH_BITS)] : 0.0;
        t->state[j] = (uint32_t)j * 512 + (n < 8 ? (1u << n) + (v & ((1u << n) - 1)) : 256 + (v & 255));
        t->x[2 + M + E + j] = table_stretch(b, b->hmap[t->state[j]]);
    }
    t->x[b->inputs - 1] = 0.25;  /* a bias */
}

/* The two mixing layers; the probability of a 1 before the maps (t->pm). */
static void bit_mix(Bits *b, Bit *t, uint32_t node, int i, const uint32_t *sel) {
    const int X = b->inputs;
    double dot = 0.0;
    t->v = b->w2 + (size_t)node * MIXERS;
    /* faster at first (8 times), settling over some 16 K bits */
    t->rate = b->lr * (1.0 + 8.0 * 16384.0 / (16384.0 + (double)b->coded));
    (void)i;
    double ds[MIXERS];
    for (int r = 0; r < MIXERS; r++) {
        t->w[r] = b->w[r] + (size_t)(sel[r] % b->sets[r]) * X;
        ds[r] = t->x[0];  /* the weight of q starts at 1: the symbol mixture as it is */
    }
    /* the five sums side by side: each still adds its terms in order, but one sum's additions
     * no longer wait for each other's */
    for (int k = 0; k < X; k++)
        for (int r = 0; r < MIXERS; r++) ds[r] += t->w[r][k] * t->x[k];
    for (int r = 0; r < MIXERS; r++) {
        double d = ds[r];
        d = d < -30.0 ? -30.0 : d > 30.0 ? 30.0 : d;
        t->s1[r] = d;
        t->p1[r] = squash(d);
        dot += (1.0 / MIXERS + t->v[r]) * d;
    }
    dot = dot < -30.0 ? -30.0 : dot > 30.0 ? 30.0 : dot;
    t->pm = squash(dot);
    t->k = knot_of(dot);
}

/* The maps' refinement of t->pm, by the previous symbol (`prev`, its byte) and by the previous
 * two (`h2`, hashed): the probability the coder uses. */
static double *apm_row(const Bits *b, uint32_t node, uint32_t prev) {
    uint64_t at = ((uint64_t)node << 8) | prev;
    return b->apm + (size_t)(at < b->apm_rows ? at : mix32((uint32_t)at) % b->apm_rows) * APM_KNOTS;
}

static float *apm2_row(const Bits *b, uint32_t node, uint32_t h2) {
    return b->apm2 + (size_t)(mix32(h2 + node * 0x9E3779B1u) & (APM2_ROWS - 1)) * APM_KNOTS;
}

static double bit_refine(Bits *b, Bit *t, uint32_t node, uint32_t prev, uint32_t h2) {
    t->row = apm_row(b, node, prev);
    t->row2 = apm2_row(b, node, h2);
    size_t k = t->k.knot;
    double f = t->k.frac;
    double pa = (1.0 - f) * (b->knots[k] + t->row[k]) + f * (b->knots[k + 1] + t->row[k + 1]);
    double pa2 = (1.0 - f) * (b->knots[k] + t->row2[k]) + f * (b->knots[k + 1] + t->row2[k + 1]);
    return 0.3 * t->pm + 0.3 * pa + 0.4 * pa2;
}

/* Everything learns from the bit: the mixers by gradient descent on its code length, the maps'
 * two knots, the slots and the history maps. */
static void bit_learn(Bits *b, Bit *t, int bit) {
    const int X = b->inputs;
    for (int r = 0; r < MIXERS; r++) {
        double err = t->rate * (bit - t->p1[r]);
        for (int k = 0; k < X; k++) t->w[r][k] += err * t->x[k];
        t->v[r] += 0.0005 * (bit - t->pm) * t->s1[r];
    }
    size_t k = t->k.knot;
    double f = t->k.frac;
    t->row[k] += 0.02 * (1.0 - f) * (bit - b->knots[k] - t->row[k]);
    t->row[k + 1] += 0.02 * f * (bit - b->knots[k + 1] - t->row[k + 1]);
    t->row2[k] += (float)(0.02 * (1.0 - f) * (bit - b->knots[k] - t->row2[k]));
    t->row2[k + 1] += (float)(0.02 * f * (bit - b->knots[k + 1] - t->row2[k + 1]));
    for (int j = 0; j < b->models; j++) {
        uint32_t v = *t->slot[j];
        int64_t pr = v >> 16, n = (v >> 8) & 255;
        if (n == 0) pr = 32768;
        pr += (((int64_t)bit << 16) - pr) * b->rate[n] >> 16;
        pr = pr < 1 ? 1 : pr > 65535 ? 65535 : pr;
        if (n < b->limit) n++;
        *t->slot[j] = (uint32_t)(pr << 16) | (uint32_t)(n << 8) | (((v & 255) << 1 | (uint32_t)bit) & 255);
        int32_t hn = b->hmap_n[t->state[j]];
        b->hmap[t->state[j]] += (bit - b->hmap[t->state[j]]) / (hn + 1.5);
        if (hn < 1023) b->hmap_n[t->state[j]] = hn + 1;
    }
}

/* Each model's bucket for the half symbol that starts at `node`; a bucket that another context
 * held (its check differs) starts afresh. */
static void bit_buckets(Bits *b, const uint32_t *ctx, uint32_t node, uint32_t **bucket) {
    for (int j = 0; j < b->models; j++) {
        uint32_t check;
        uint32_t *at = bucket[j] = bucket_of_half(b, j, ctx[j], node, &check);
        /* without a branch: whether a bucket is still its context's is a coin toss to the CPU's
         * branch predictor, and each wrong guess cost more than clearing by a mask */
        uint32_t keep = at[0] == check ? 0xFFFFFFFFu : 0u;
        for (int k = 1; k < 16; k++) at[k] &= keep;
        at[0] = check;
    }
}

/* The trees of every distribution that gives inputs: q, each count expert's row, the network. */
static void bits_trees(Model *m, Bits *b, const double *q, const uint32_t *rows, const float *logits) {
    const int A = m->c.alphabet, V = m->c.vocab, E = b->experts;
    const size_t nodes = (size_t)1 << b->nbits;
    bits_tree(b->tree, nodes, q, A);
    for (int e = 0; e < E; e++)
        counts_tree(b->ctree + (size_t)e * 2 * nodes, nodes, m->counts + ((size_t)e * m->rows + rows[e]) * A, A);
    double *pn = m->z;  /* scratch: the mixture is done with it */
    double top = logits[0], sum = 0.0;
    for (int a = 1; a < V; a++) if (logits[a] > top) top = logits[a];
    for (int a = 0; a < V; a++) pn[a] = (double)logits[a] - top;
    exps(pn, m->pun, V);
    for (int a = V; a < A; a++) pn[a] = 0.0;
    for (int a = 0; a < A; a++) sum += pn[a];
    for (int a = 0; a < A; a++) pn[a] /= sum;
    bits_tree(b->tree + 2 * nodes, nodes, pn, A);
}

/* Code symbol y (or decode it) bit by bit, the most significant first, in `lane`; `prev` is the
 * symbol before it. Returns the symbol, or -1 where the stream is damaged (a code past the
 * alphabet), -2 for memory. */
static int bits_code(Model *m, Bits *b, int decoding, int lane, int y, const double *q, int prev,
                     const uint32_t *rows, const float *logits) {
    const uint32_t *ctx = b->ctx + (size_t)lane * b->models;
    const BitLane *s = b->lane + lane;
    bits_trees(m, b, q, rows, logits);
    uint32_t *bucket[BIT_INPUTS_MAX], node = 1, local = 1, h2 = ctx[2];  /* order 2's context */
    uint32_t g = b->glyph[prev];
    uint32_t cb = (uint32_t)(s->col < 15 ? s->col : 15 + (s->col - 15) / 4 < 40 ? 15 + (s->col - 15) / 4 : 40);
    uint32_t longer = s->col >= s->width;
    Bit t;
    for (int i = b->nbits - 1; i >= 0; i--) {
        if ((b->nbits - 1 - i) % 4 == 0) {  /* a half symbol starts */
            bit_buckets(b, ctx, node, bucket);
            local = 1;
        }
        if (i > 0 && (b->nbits - i) % 4 == 0) {  /* the next bit starts a half: it is one of two */
            prefetch_buckets(b, ctx, 2 * node);
            prefetch_buckets(b, ctx, 2 * node + 1);
        }
        uint32_t sel[MIXERS] = {node, 0, g << b->nbits | node, (cb * 2 + longer) << b->nbits | node,
                                (uint32_t)(s->letters < 15 ? s->letters : 15) << b->nbits | node};
        /* the tables this bit will read at hashed places, asked for while its inputs are gathered */
        for (int r = 2; r < MIXERS; r++)
            prefetch_span(b->w[r] + (size_t)(sel[r] % b->sets[r]) * b->inputs, (size_t)b->inputs * sizeof(double));
        prefetch_span(apm_row(b, node, g), APM_KNOTS * sizeof(double));
        prefetch_span(apm2_row(b, node, h2), APM_KNOTS * sizeof(float));
        bit_inputs(b, &t, node, local, bucket);
        int known = 0;
        for (int j = 1; j <= ORDERS_KNOWN && j < b->models; j++) known += (*t.slot[j] & 0xFF00u) != 0;
        sel[1] = (uint32_t)known * 16 + (uint32_t)i;
        bit_mix(b, &t, node, i, sel);
        double p = bit_refine(b, &t, node, g, h2);
        uint32_t p1 = (uint32_t)floor(p * 65536.0);
        p1 = p1 < 1 ? 1 : p1 > 65535 ? 65535 : p1;
        uint32_t cum[3] = {0, 65536u - p1, 65536u};
        int bit;
        if (decoding) {
            bit = decode(m, cum, 2);
            if (bit < 0) return -1;
        } else {
            bit = (y >> i) & 1;
            if (encode(m, cum[bit], cum[bit + 1], 65536u)) return -2;
        }
        bit_learn(b, &t, bit);
        b->coded++;
        node = 2 * node + (uint32_t)bit;
        local = 2 * local + (uint32_t)bit;
    }
    int sym = (int)(node - (1u << b->nbits));
    return sym < m->c.alphabet ? sym : -1;
}
