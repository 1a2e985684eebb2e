/* The last stage: each symbol coded as its bits, each bit's probability mixed again with bitwise
 * context models.
 *
 * The symbol mixture q (kernel.c) gives every bit of the symbol's code a probability: the mass of
 * the symbols whose code goes on with a 1, over the mass of those that share the bits so far. Each
 * bit is then predicted by a logistic mixer (PAQ's, Mahoney 2005) of that probability's stretch
 * ln(p / (1 - p)) and of bitwise context models: for a context (the last k symbols, the word so far,
 * ...) and the bits of this symbol so far, a slot holding the probability that a 1 follows, which
 * moves towards each bit by 1 / (n + 1.5), n the times it was seen (capped: recent bits weigh more).
 * These adapt within a few occurrences where the symbol experts' counts take many, and they are
 * cheap: a slot per context per bit instead of a row of A counts. The mixer's weights are chosen by
 * the bits so far and learn from each bit by gradient descent on its code length.
 *
 * Like the rest of the kernel, plain IEEE arithmetic in a fixed order: stretch from a table made
 * with cm_log, squash with cm_exp, integer slots.
 */

#define BIT_INPUTS_MAX 64
#define STRETCH_BITS 12
#define MIXERS 4           /* first-layer mixers, each choosing its weights by its own context */
#define APM2_ROWS (1u << 18)
#define LINE 256
#define SETS 65536          /* weight sets per first-layer mixer */

typedef struct Bits {
    int nbits;             /* bits per symbol: the alphabet's size rounded up to a power of two */
    int models;            /* bitwise context models */
    int inputs;            /* the mixer's inputs: the symbol mixture, the models, a bias */
    uint32_t mask;         /* buckets per model - 1 */
    uint32_t *slots;       /* models * buckets * 16: P(1) in the high 16 bits, then times seen (8), the
                              last 8 bits; a bucket (one cache line) holds the nodes of a nibble */
    double *hmap;          /* models * 256: P(1) after each short history (times seen, the last bits) */
    int32_t *hmap_n;
    uint32_t *ctx;         /* L * models: each model's context hash for the lane's next symbol */
    uint32_t *words;       /* L * 3: hashes of the current word and the two before it */
    uint8_t *lines;        /* L * 2 * LINE: the line before and the current one, per lane */
    int32_t *col;          /* L * 2: the current column, the length of the line before */
    uint16_t *follow;      /* 65536: the two symbols that followed each pair of symbols last (shared) */
    uint32_t *nest;        /* L: quote and bracket state */
    uint8_t *norm;         /* L * 8: the last symbols with case folded and each run of white space one space */
    double *w;             /* MIXERS * SETS * inputs: the first layer's weights, a set per context */
    double *w2;            /* nodes * MIXERS: the second layer's, a set per node */
    double *tree;          /* 2 * 2^nbits: the symbol mixture's mass below each node */
    double *apm;           /* apm_rows * 33: the final refinement, by the previous symbol and node */
    float *apm2;           /* APM2_ROWS * 33: another, by the two previous symbols (hashed) and node */
    uint32_t apm_rows;
    int32_t rate[1024];    /* 65536 / (n + 1.5): how far a slot seen n times moves */
    double stretch[1 << STRETCH_BITS];
    double lr;
    int limit;
    int64_t coded;         /* bits coded so far: the mixers learn faster at first */
} Bits;

static double stretch_of(double p) {
    p = p < 1e-6 ? 1e-6 : p > 1.0 - 1e-6 ? 1.0 - 1e-6 : p;
    return cm_log(p / (1.0 - p));
}

static double table_stretch(const Bits *b, double p) {
    int k = (int)(p * (1 << STRETCH_BITS));
    return b->stretch[k < 0 ? 0 : k > (1 << STRETCH_BITS) - 1 ? (1 << STRETCH_BITS) - 1 : k];
}

static void bits_free(Bits *b) {
    if (!b) return;
    free(b->slots); free(b->ctx); free(b->words); free(b->w); free(b->w2); free(b->tree); free(b->apm); free(b->apm2); free(b->hmap); free(b->hmap_n); free(b->lines); free(b->col); free(b->follow); free(b->nest); free(b->norm);
    free(b);
}

static Bits *bits_new(int lanes, int alphabet, int models, int rows_log2, double lr, int limit, int experts) {
    Bits *b = calloc(1, sizeof(Bits));
    if (!b) return NULL;
    while ((1 << b->nbits) < alphabet) b->nbits++;
    b->models = models;
    b->inputs = 2 * models + experts + 3;
    if (b->inputs > BIT_INPUTS_MAX) { free(b); return NULL; }
    b->follow = calloc(65536, sizeof(uint16_t));
    b->nest = calloc((size_t)lanes, sizeof(uint32_t));
    b->norm = calloc((size_t)lanes * 8, 1);
    b->lines = calloc((size_t)lanes * 2 * LINE, 1);
    b->col = calloc((size_t)lanes * 2, sizeof(int32_t));
    b->hmap = malloc((size_t)models * 256 * sizeof(double));
    b->hmap_n = calloc((size_t)models * 256, sizeof(int32_t));
    b->mask = (1u << rows_log2) - 1;
    b->lr = lr;
    b->limit = limit;
    size_t nodes = (size_t)1 << b->nbits;
    b->apm_rows = (uint32_t)(nodes * 256);
    b->slots = aligned_alloc(64, ((size_t)models << rows_log2) * 16 * sizeof(uint32_t));
    b->ctx = calloc((size_t)lanes * models + 1, sizeof(uint32_t));
    b->words = calloc((size_t)lanes * 3, sizeof(uint32_t));
    b->w = calloc((size_t)MIXERS * SETS * b->inputs, sizeof(double));
    b->w2 = malloc(nodes * MIXERS * sizeof(double));
    b->tree = calloc((size_t)(experts + 2) * 2 * nodes, sizeof(double));
    b->apm = malloc((size_t)b->apm_rows * 33 * sizeof(double));
    b->apm2 = malloc((size_t)APM2_ROWS * 33 * sizeof(float));
    if (!b->slots || !b->ctx || !b->words || !b->w || !b->w2 || !b->tree || !b->apm || !b->apm2 || !b->hmap || !b->hmap_n || !b->lines || !b->col || !b->follow || !b->nest || !b->norm) { bits_free(b); return NULL; }
    for (size_t i = 0; i < ((size_t)models << rows_log2) * 16; i++) b->slots[i] = 0x8000u << 16;  /* p = 1/2, n = 0 */
    for (size_t i = 0; i < (size_t)models * 256; i++) b->hmap[i] = 0.5;
    for (size_t i = 0; i < (size_t)MIXERS * SETS; i++) b->w[i * b->inputs] = 1.0;  /* the symbol mixture as it is */
    for (size_t i = 0; i < nodes * MIXERS; i++) b->w2[i] = 1.0 / MIXERS;
    for (int n = 0; n < 1024; n++) b->rate[n] = (int32_t)(65536.0 / (n + 1.5));
    for (int i = 0; i < (1 << STRETCH_BITS); i++) b->stretch[i] = stretch_of((i + 0.5) / (1 << STRETCH_BITS));
    for (uint32_t i = 0; i < b->apm_rows; i++)
        for (int j = 0; j < 33; j++) b->apm[(size_t)i * 33 + j] = squash((j - 16) * 0.5);
    for (uint32_t i = 0; i < APM2_ROWS; i++)
        for (int j = 0; j < 33; j++) b->apm2[(size_t)i * 33 + j] = (float)squash((j - 16) * 0.5);
    return b;
}

/* Each model's context for the lane's next symbol: order 0, the last 1..6 symbols, the word so far,
 * with the word before, with the two before, and sparse ones (the symbols two and three back). */
static void bits_contexts(Bits *b, const int32_t *hist, int seen, uint32_t word, int l) {
    uint32_t *ctx = b->ctx + (size_t)l * b->models, *words = b->words + (size_t)l * 3;
    if (word == 0 && words[0] != 0) {  /* a word just ended */
        words[2] = words[1]; words[1] = words[0];
    }
    words[0] = word;
    uint8_t *above = b->lines + (size_t)l * 2 * LINE, *line = above + LINE;
    int32_t *col = b->col + (size_t)l * 2;
    if (seen > 0) {  /* the symbol just coded moves the column on */
        if (hist[0] == '\n') {
            memcpy(above, line, LINE);
            col[1] = col[0];
            col[0] = 0;
        } else {
            if (col[0] < LINE) line[col[0]] = (uint8_t)hist[0];
            col[0]++;
        }
    }
    uint32_t pair = ((uint32_t)hist[2] & 255) << 8 | ((uint32_t)hist[1] & 255);
    uint32_t *nest = b->nest + l;
    if (seen > 1) b->follow[pair] = (uint16_t)(b->follow[pair] << 8 | ((uint32_t)hist[0] & 255));
    if (seen > 0) {
        int y = hist[0];
        if (y == '"') *nest ^= 1u;
        else if (y == '(') *nest |= 2u;
        else if (y == ')') *nest &= ~2u;
        else if (y == '\'') *nest ^= 4u;
    }
    uint8_t *norm = b->norm + (size_t)l * 8;
    if (seen > 0) {
        int y = hist[0];
        int c = y == '\n' || y == '\r' || y == '\t' ? ' ' : y >= 'A' && y <= 'Z' ? y + 32 : y & 255;
        if (!(c == ' ' && norm[0] == ' ')) { memmove(norm + 1, norm, 7); norm[0] = (uint8_t)c; }
    }
    uint32_t n3 = (uint32_t)norm[0] | (uint32_t)norm[1] << 8 | (uint32_t)norm[2] << 16;
    uint32_t n5 = (uint32_t)norm[3] | (uint32_t)norm[4] << 8;
    uint32_t ind = b->follow[((uint32_t)hist[1] & 255) << 8 | ((uint32_t)hist[0] & 255)];
    int c0 = col[0] < LINE - 1 ? col[0] : LINE - 1;
    uint32_t up = col[0] < col[1] && col[0] < LINE ? above[col[0]] : 0u;
    int j = 0;
    ctx[j++] = 0;
    for (int k = 1; k <= 6 && j < b->models; k++) ctx[j++] = order_hash(hist, k < seen ? k : seen, 40u + k);
    uint32_t cur = word ? word : (uint32_t)hist[0] + 0x10000u;
    if (j < b->models) ctx[j++] = mix32(cur * 0x9E3779B1u + 501u);
    if (j < b->models) ctx[j++] = mix32(cur + 0x5bd1e995u * words[1] + 502u);
    if (j < b->models) ctx[j++] = mix32(mix32(cur + 0x5bd1e995u * words[1]) + 0x2F0B4A1Bu * words[2] + 503u);
    if (j < b->models) ctx[j++] = mix32((uint32_t)hist[1] * 0x9E3779B1u + (uint32_t)hist[2] * 0x85EBCA6Bu + 504u);
    if (j < b->models) ctx[j++] = mix32(up * 0x9E3779B1u + (uint32_t)c0 * 0x85EBCA6Bu + 505u);
    if (j < b->models) ctx[j++] = mix32(up * 0x9E3779B1u + (uint32_t)hist[0] * 0x85EBCA6Bu + 506u);
    if (j < b->models) ctx[j++] = mix32((uint32_t)line[0] * 0x9E3779B1u + (uint32_t)c0 * 0x85EBCA6Bu + (uint32_t)hist[0] * 0x2F0B4A1Bu + 507u);
    if (j < b->models) ctx[j++] = mix32(ind * 0x9E3779B1u + (uint32_t)hist[0] * 0x85EBCA6Bu + 508u);
    if (j < b->models) ctx[j++] = mix32((uint32_t)hist[0] * 0x9E3779B1u + (uint32_t)hist[2] * 0x85EBCA6Bu + 509u);
    if (j < b->models) ctx[j++] = mix32(words[1] * 0x9E3779B1u + order_hash(hist, 2, 7u) + 510u);
    if (j < b->models) ctx[j++] = mix32(*nest * 0x9E3779B1u + (uint32_t)hist[0] * 0x85EBCA6Bu + cur * 0x2F0B4A1Bu + 511u);
    if (j < b->models) ctx[j++] = mix32((uint32_t)hist[3] * 0x9E3779B1u + (uint32_t)hist[2] * 0x85EBCA6Bu + (uint32_t)hist[1] * 0x2F0B4A1Bu + 512u);
    if (j < b->models) ctx[j++] = mix32(n3 * 0x9E3779B1u + 513u);
    if (j < b->models) ctx[j++] = mix32(mix32(n3 + 514u) + n5 * 0x85EBCA6Bu);
    while (j < b->models) ctx[j++] = 0;
}

/* The mass of q below every node of the binary tree over the symbols' codes (leaves past the
 * alphabet hold none). */
static void bits_tree(double *t, size_t nodes, const double *q, int A) {
    for (size_t a = 0; a < nodes; a++) t[nodes + a] = (int)a < A ? q[a] : 0.0;
    for (size_t i = nodes - 1; i >= 1; i--) t[i] = t[2 * i] + t[2 * i + 1];
}

static void counts_tree(double *t, size_t nodes, const uint16_t *cnt, int A) {
    for (size_t a = 0; a < nodes; a++) t[nodes + a] = (int)a < A ? (double)cnt[a] : 0.0;
    for (size_t i = nodes - 1; i >= 1; i--) t[i] = t[2 * i] + t[2 * i + 1];
}

/* The input a tree gives at a node: the stretch of the share of the node's mass that goes on with
 * a 1; nothing (0) where the node holds no mass. */
static double tree_input(const double *t, uint32_t node, double prior) {
    double below = t[node];
    if (!(below > 0)) return 0.0;
    return stretch_of((t[2 * node + 1] + prior) / (below + 2 * prior));
}

/* The same from the stretch table: 12 bits of the probability. */
static double tree_input_fast(const Bits *b, const double *t, uint32_t node, double prior) {
    double below = t[node];
    if (!(below > 0)) return 0.0;
    return table_stretch(b, (t[2 * node + 1] + prior) / (below + 2 * prior));
}

/* Code symbol y (or decode it) bit by bit, the most significant first; returns the symbol, or -1
 * where the stream is damaged (a code past the alphabet), -2 for memory. */
static int bits_code(Model *m, Bits *b, int decoding, int lane, int y, const double *q, int prev,
                     const uint32_t *rows, const float *logits) {
    const int A = m->c.alphabet, X = b->inputs, E = m->E, V = m->c.vocab;
    const uint32_t *ctx = b->ctx + (size_t)lane * b->models;
    const size_t nodes = (size_t)1 << b->nbits;
    bits_tree(b->tree, nodes, q, A);
    for (int e = 0; e < E; e++)
        counts_tree(b->tree + (size_t)(e + 1) * 2 * nodes, nodes, m->counts + ((size_t)e * m->rows + rows[e]) * A, A);
    {   /* the network's own distribution */
        double *pn = m->z;  /* scratch: the mixture is done with it */
        double top = logits[0], sum = 0.0;
        for (int a = 1; a < V; a++) if (logits[a] > top) top = logits[a];
        for (int a = 0; a < A; a++) { pn[a] = a < V ? cm_exp((double)logits[a] - top) : 0.0; sum += pn[a]; }
        for (int a = 0; a < A; a++) pn[a] /= sum;
        bits_tree(b->tree + (size_t)(E + 1) * 2 * nodes, nodes, pn, A);
    }
    double x[BIT_INPUTS_MAX];
    uint32_t *slot[BIT_INPUTS_MAX], state[BIT_INPUTS_MAX], *bucket[BIT_INPUTS_MAX], local = 1;
    uint32_t node = 1, h2 = b->ctx[(size_t)lane * b->models + 2];  /* order 2's hash */
    for (int i = b->nbits - 1; i >= 0; i--) {
        x[0] = tree_input(b->tree, node, 0.0);
        int done = b->nbits - 1 - i;  /* bits coded so far */
        if (done % 4 == 0) {  /* a nibble starts: each model's bucket for it */
            for (int j = 0; j < b->models; j++) {
                uint32_t h = mix32(ctx[j] + node * 0x9E3779B1u), check = (h >> 24) | 0x100u;
                bucket[j] = b->slots + ((size_t)j * (b->mask + 1) + (h & b->mask)) * 16;
                if (bucket[j][0] != check) {  /* another context's, or new: start afresh */
                    bucket[j][0] = check;
                    for (int k = 1; k < 16; k++) bucket[j][k] = 0x8000u << 16;
                }
            }
            local = 1;
        }
        for (int e = 0; e < E; e++) x[1 + b->models + e] = tree_input(b->tree + (size_t)(e + 1) * 2 * nodes, node, 0.05);
        x[1 + b->models + E] = tree_input(b->tree + (size_t)(E + 1) * 2 * nodes, node, 0.0);
        for (int j = 0; j < b->models; j++) {
            slot[j] = bucket[j] + local;
            x[1 + j] = b->stretch[*slot[j] >> (32 - STRETCH_BITS)];
            uint32_t n = (*slot[j] >> 8) & 255;
            state[j] = (uint32_t)j * 256 + ((n < 7 ? n : 7) << 5 | (*slot[j] & 31));
            x[2 + b->models + E + j] = table_stretch(b, b->hmap[state[j]]);
        }
        x[X - 1] = 0.25;
        int known = 0;  /* how many of the orders 1..6 have seen this context and bits */
        for (int j = 1; j <= 6 && j < b->models; j++) known += (*slot[j] & 0xFF00u) != 0;
        int32_t column = b->col[(size_t)lane * 2], width = b->col[(size_t)lane * 2 + 1];
        uint32_t cb = (uint32_t)(column < 15 ? column : 15 + (column - 15) / 4 < 40 ? 15 + (column - 15) / 4 : 40);
        uint32_t past = column >= width ? 1u : 0u;
        uint32_t sel[MIXERS] = {node, (uint32_t)(known * 8 + i), ((uint32_t)(prev & 255) << 8 | node),
                                ((cb * 2 + past) << 8) | node};
        double *w[MIXERS], s1[MIXERS], pr[MIXERS], dot = 0.0;
        double *v = b->w2 + (size_t)node * MIXERS;
        double rate = b->lr * (1.0 + 8.0 * 16384.0 / (16384.0 + (double)b->coded));
        b->coded++;
        for (int r = 0; r < MIXERS; r++) {
            w[r] = b->w + ((size_t)r * SETS + (sel[r] & (SETS - 1))) * X;
            double d = 0.0;
            for (int k = 0; k < X; k++) d += w[r][k] * x[k];
            d = d < -30.0 ? -30.0 : d > 30.0 ? 30.0 : d;
            s1[r] = d;
            pr[r] = squash(d);
            dot += v[r] * d;
        }
        dot = dot < -30.0 ? -30.0 : dot > 30.0 ? 30.0 : dot;
        double pm = squash(dot);
        /* the final map: by the previous symbol and the node, between 33 knots of the stretch */
        double st = dot < -7.999 ? -7.999 : dot > 7.999 ? 7.999 : dot;
        double pos = (st + 8.0) * 2.0;
        size_t knot = (size_t)floor(pos);
        double frac = pos - knot;
        double *row = b->apm + ((size_t)node * 256 + (uint32_t)(prev & 255)) * 33;
        double pa = (1.0 - frac) * row[knot] + frac * row[knot + 1];
        float *row2 = b->apm2 + (size_t)((mix32(h2 + node * 0x9E3779B1u)) & (APM2_ROWS - 1)) * 33;
        double pa2 = (1.0 - frac) * row2[knot] + frac * row2[knot + 1];
        double p = 0.3 * pm + 0.3 * pa + 0.4 * pa2;
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
        /* learning: the mixer by gradient descent, the map's two knots, the slots */
        for (int r = 0; r < MIXERS; r++) {
            double err = bit - pr[r];
            for (int k = 0; k < X; k++) w[r][k] += rate * err * x[k];
            v[r] += 0.0005 * (bit - pm) * s1[r];
        }
        row[knot] += 0.02 * (1.0 - frac) * (bit - row[knot]);
        row[knot + 1] += 0.02 * frac * (bit - row[knot + 1]);
        row2[knot] += (float)(0.02 * (1.0 - frac) * (bit - row2[knot]));
        row2[knot + 1] += (float)(0.02 * frac * (bit - row2[knot + 1]));
        for (int j = 0; j < b->models; j++) {
            uint32_t v = *slot[j];
            int64_t pr = v >> 16, n = (v >> 8) & 255;
            pr += (((int64_t)bit << 16) - pr) * b->rate[n] >> 16;
            pr = pr < 1 ? 1 : pr > 65535 ? 65535 : pr;
            if (n < b->limit) n++;
            *slot[j] = (uint32_t)(pr << 16) | (uint32_t)(n << 8) | (((v & 255) << 1 | (uint32_t)bit) & 255);
            int32_t hn = b->hmap_n[state[j]];
            b->hmap[state[j]] += (bit - b->hmap[state[j]]) / (hn + 1.5);
            if (hn < 1023) b->hmap_n[state[j]] = hn + 1;
        }
        node = 2 * node + (uint32_t)bit;
        local = 2 * local + (uint32_t)bit;
    }
    int sym = (int)(node - (1u << b->nbits));
    return sym < A ? sym : -1;
}
