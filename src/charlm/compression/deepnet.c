/* The pretrained mode's network in C: a trained LSTM of one or more layers, stepping and learning
 * while coding.
 *
 * A trained character run (d2l §9.3: layer k + 1 reads the hidden states of layer k) codes a book
 * in about 1.8 bits a byte, but stepped by torch, one call per step, it ran at 2 KB/s; this is the
 * same network and the same learning (an Adam step on each block of `block` steps, by
 * backpropagation through the block from the state at its start, the gradient clipped to norm
 * `clip`) as the torch path of model.py, in float32:
 *
 *   gates = b + W [x_t ; h_{t-1}]   (W = [W_x ; W_h], rows by input, gates in torch's order i, f, g, o)
 *   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t),  logits_t = b_o + W_o h_t(top layer)
 *
 * Every matrix is kept in panels of PANEL columns (panel p holds columns p*PANEL .. +PANEL of all
 * rows, contiguous, zero past the last column), so that a product streams its weights once for all
 * lanes. The products are of three kinds, each with a fixed order of every sum that depends neither
 * on the vector width of the build, nor on the blocking, nor on the thread that computes it:
 *
 *   forward: out[n][j] = b[j] + sum over rows r, ascending, of x[n][r] W[r][j]  (each output alone)
 *   back:    out[n][r] = sum over j of W[r][j] g[n][j], as 16 partial sums (j mod 16, ascending j)
 *            added up by a fixed tree
 *   outer:   G[r][j] = sum over samples n, ascending, of x[n][r] g[n][j]  (each output alone)
 *
 * so the portable, AVX2 and AVX-512 builds compute the same bits, with one thread or two (the
 * second thread takes a fixed half of the panels or rows). The sigmoid and tanh are net.c's (via
 * exact.h's exp); this file is compiled as part of kernel.c, which includes it after net.c.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "exact.h"  /* squash */
#include "cell.h"   /* the LSTM cell, its squashes vectorised */

#define PANEL 32
/* The vector width: 16 floats with AVX-512, 8 with AVX2, 4 else. It sets how many outputs a pass
 * computes, never the order of a sum: a back() sum is 16 partial sums (16 / VW vectors) everywhere. */
#if defined(__AVX512F__)
#define VW 16
#define FWD_N 8    /* samples per pass of forward: FWD_N x PANEL / W accumulators in registers */
#define BACK_R 2   /* rows x samples per pass of back */
#define BACK_N 8
#define OUTER_R 8  /* rows per pass of outer */
#elif defined(__AVX__)
#define VW 8
#define FWD_N 2
#define BACK_R 2
#define BACK_N 2
#define OUTER_R 2
#else
#define VW 4
#define FWD_N 1
#define BACK_R 1
#define BACK_N 2
#define OUTER_R 1
#endif
#define NV (PANEL / VW)  /* vectors per panel row */
#define NP (16 / VW)     /* vectors per 16 partial sums */
typedef float vec __attribute__((vector_size(VW * 4)));
typedef float vecu __attribute__((vector_size(VW * 4), aligned(4)));  /* unaligned loads and stores */
#define LD(p) (*(const vecu *)(p))
#define ST(p, v) (*(vecu *)(p) = (v))

typedef struct Mat {   /* rows x cols, in panels */
    int rows, cols, panels;
    float *w;          /* w[(p * rows + r) * PANEL + jj] = W[r][p * PANEL + jj] */
} Mat;

static size_t mat_size(int rows, int cols) { return (size_t)((cols + PANEL - 1) / PANEL) * rows * PANEL; }

static Mat mat_at(float *w, int rows, int cols) {
    Mat m = {rows, cols, (cols + PANEL - 1) / PANEL, w};
    return m;
}

/* Packs rows x cols (row-major, rows by input) into panels; `transposed`: the source is torch's
 * cols x rows (an nn.Linear or nn.LSTM weight). */
static void pack(Mat *m, const float *src, int transposed) {
    for (int p = 0; p < m->panels; p++)
        for (int r = 0; r < m->rows; r++)
            for (int jj = 0; jj < PANEL; jj++) {
                int j = p * PANEL + jj;
                float v = j >= m->cols ? 0.0f : transposed ? src[(size_t)j * m->rows + r]
                                                           : src[(size_t)r * m->cols + j];
                m->w[((size_t)p * m->rows + r) * PANEL + jj] = v;
            }
}

/* forward, panels [p0, p1): out (N x ldo) = bias + x (N x ldx, its first W.rows columns) W. */
static void forward_panels(const Mat *M, const float *bias, const float *x, int ldx, int N, float *out,
                           int ldo, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        const float *wp = M->w + (size_t)p * M->rows * PANEL;
        for (int n0 = 0; n0 < N; n0 += FWD_N) {
            const float *xs[FWD_N];
            vec acc[FWD_N][NV];
            for (int i = 0; i < FWD_N; i++) {
                int n = n0 + i < N ? n0 + i : N - 1;  /* past the end: a repeat, not stored */
                xs[i] = x + (size_t)n * ldx;
                for (int v = 0; v < NV; v++) acc[i][v] = LD(bias + p * PANEL + v * VW);
            }
            for (int r = 0; r < M->rows; r++) {
                vec w[NV];
                for (int v = 0; v < NV; v++) w[v] = LD(wp + (size_t)r * PANEL + v * VW);
                for (int i = 0; i < FWD_N; i++) {
                    float a = xs[i][r];
                    for (int v = 0; v < NV; v++) acc[i][v] += a * w[v];
                }
            }
            for (int i = 0; i < FWD_N && n0 + i < N; i++)
                for (int v = 0; v < NV; v++) ST(out + (size_t)(n0 + i) * ldo + p * PANEL + v * VW, acc[i][v]);
        }
    }
}

static float tree16(const float *s) {  /* the 16 partial sums, added up in a fixed tree */
    float q[8];
    for (int i = 0; i < 8; i++) q[i] = s[i] + s[i + 8];
    return ((q[0] + q[4]) + (q[2] + q[6])) + ((q[1] + q[5]) + (q[3] + q[7]));
}

/* back, rows [r0, r1): out[n][r - first] = sum_j W[r][j] g[n][j] for N samples (g: N x ldg, zero
 * past W.cols up to the panels' end). The panels go by in chunks whose g stays in the L1 cache
 * while every row block passes over it; the partial sums wait in `partial` (rows x BACK_N x 16,
 * indexed by row, so two threads on other rows never meet) between chunks, which changes no sum. */
#define CHUNK 16
static void back_rows(const Mat *M, int first, const float *g, int ldg, int N, float *out, int ldo,
                      float *partial, int r0, int r1) {
    const size_t step = (size_t)M->rows * PANEL;
    for (int n0 = 0; n0 < N; n0 += BACK_N) {
        const float *gs[BACK_N];
        for (int i = 0; i < BACK_N; i++) gs[i] = g + (size_t)(n0 + i < N ? n0 + i : N - 1) * ldg;
        for (int pc = 0; pc < M->panels; pc += CHUNK) {
            int pe = pc + CHUNK < M->panels ? pc + CHUNK : M->panels;
            for (int rb = r0; rb < r1; rb += BACK_R) {
                vec acc[BACK_R][BACK_N][NP];
                const float *ws[BACK_R];
                for (int k = 0; k < BACK_R; k++) {
                    ws[k] = M->w + (size_t)(rb + k < r1 ? rb + k : r1 - 1) * PANEL;
                    float *keep = partial + ((size_t)(rb + k) * BACK_N) * 16;
                    for (int i = 0; i < BACK_N; i++)
                        for (int v = 0; v < NP; v++)
                            acc[k][i][v] = pc ? LD(keep + i * 16 + v * VW) : (vec){0};
                }
                for (int p = pc; p < pe; p++) {
                    for (int k = 0; k < BACK_R; k++)  /* a row's panels lie far apart: ask for them early */
                        __builtin_prefetch(ws[k] + (size_t)(p + 4) * step);
                    for (int half = 0; half < 32; half += 16)  /* columns j, j + 16: partial j mod 16 */
                        for (int v = 0; v < NP; v++) {
                            vec w[BACK_R];
                            for (int k = 0; k < BACK_R; k++) w[k] = LD(ws[k] + (size_t)p * step + half + v * VW);
                            for (int i = 0; i < BACK_N; i++) {
                                vec gv = LD(gs[i] + p * PANEL + half + v * VW);
                                for (int k = 0; k < BACK_R; k++) acc[k][i][v] += w[k] * gv;
                            }
                        }
                }
                for (int k = 0; k < BACK_R && rb + k < r1; k++)
                    for (int i = 0; i < BACK_N && n0 + i < N; i++) {
                        float *keep = partial + ((size_t)(rb + k) * BACK_N + i) * 16;
                        for (int v = 0; v < NP; v++) ST(keep + v * VW, acc[k][i][v]);
                        if (pe == M->panels) out[(size_t)(n0 + i) * ldo + rb + k - first] = tree16(keep);
                    }
            }
        }
    }
}

/* outer, panels [p0, p1): G (in W's panels) = sum_n x[n] (N x ldx) times g[n] (N x ldg). */
static void outer_panels(Mat *G, const float *x, int ldx, const float *g, int ldg, int N, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        float *gp = G->w + (size_t)p * G->rows * PANEL;
        for (int rb = 0; rb < G->rows; rb += OUTER_R) {
            vec acc[OUTER_R][NV];
            for (int k = 0; k < OUTER_R; k++)
                for (int v = 0; v < NV; v++) acc[k][v] = (vec){0};
            int rows = G->rows - rb < OUTER_R ? G->rows - rb : OUTER_R;
            for (int n = 0; n < N; n++) {
                const float *xn = x + (size_t)n * ldx + rb;
                vec gv[NV];
                for (int v = 0; v < NV; v++) gv[v] = LD(g + (size_t)n * ldg + p * PANEL + v * VW);
                for (int k = 0; k < OUTER_R; k++) {
                    float a = xn[k < rows ? k : rows - 1];
                    for (int v = 0; v < NV; v++) acc[k][v] += a * gv[v];
                }
            }
            for (int k = 0; k < rows; k++)
                for (int v = 0; v < NV; v++) ST(gp + (size_t)(rb + k) * PANEL + v * VW, acc[k][v]);
        }
    }
}

/* ---- two threads, each a fixed share of a product's panels or rows -------------------------- */

typedef struct Job {
    int kind;                      /* 0 forward, 1 back, 2 outer */
    Mat *W;
    const float *bias, *x, *g;
    float *out, *partial;
    int ldx, ldg, ldo, N, first, lo, hi;
} Job;

typedef struct Pool {
    pthread_t thread;
    int running;
    atomic_int posted, done;       /* jobs handed to the helper, and finished by it */
    atomic_int quit;
    Job job;
} Pool;

static void run_job(const Job *j, int lo, int hi) {
    if (j->kind == 0) forward_panels(j->W, j->bias, j->x, j->ldx, j->N, j->out, j->ldo, lo, hi);
    else if (j->kind == 1) back_rows(j->W, j->first, j->g, j->ldg, j->N, j->out, j->ldo, j->partial, lo, hi);
    else outer_panels(j->W, j->x, j->ldx, j->g, j->ldg, j->N, lo, hi);
}

static int split(const Job *j) {  /* the helper takes [split, hi); rows of back() in BACK_R blocks */
    int mid = j->lo + (j->hi - j->lo) / 2;
    return j->kind == 1 ? j->lo + (mid - j->lo) / BACK_R * BACK_R : mid;
}

static void *helper(void *arg) {
    Pool *pool = arg;
    int seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool->posted, memory_order_acquire) == seen) {
            if (atomic_load_explicit(&pool->quit, memory_order_relaxed)) return NULL;
            if (++spins > 4000) sched_yield();  /* a busy machine: give the core back */
        }
        seen++;
        run_job(&pool->job, split(&pool->job), pool->job.hi);
        atomic_store_explicit(&pool->done, seen, memory_order_release);
    }
}

/* The job over [lo, hi), shared with the helper thread where there is one. */
static void run(Pool *pool, Job j) {
    if (!pool->running || j.hi - j.lo < 2) { run_job(&j, j.lo, j.hi); return; }
    pool->job = j;
    int ticket = atomic_load_explicit(&pool->posted, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool->posted, ticket, memory_order_release);
    run_job(&j, j.lo, split(&j));
    int spins = 0;
    while (atomic_load_explicit(&pool->done, memory_order_acquire) != ticket)
        if (++spins > 4000) sched_yield();
}

static void forward(Pool *pool, Mat *W, const float *bias, const float *x, int ldx, int N, float *out,
                    int ldo) {
    run(pool, (Job){.kind = 0, .W = W, .bias = bias, .x = x, .ldx = ldx, .N = N, .out = out, .ldo = ldo,
                    .lo = 0, .hi = W->panels});
}

static void back(Pool *pool, Mat *W, int r0, int r1, const float *g, int ldg, int N, float *out, int ldo,
                 float *partial) {
    run(pool, (Job){.kind = 1, .W = W, .g = g, .ldg = ldg, .N = N, .out = out, .ldo = ldo, .first = r0,
                    .partial = partial, .lo = r0, .hi = r1});
}

static void outer(Pool *pool, Mat *G, const float *x, int ldx, const float *g, int ldg, int N) {
    run(pool, (Job){.kind = 2, .W = G, .x = x, .ldx = ldx, .g = g, .ldg = ldg, .N = N, .lo = 0,
                    .hi = G->panels});
}

/* ---- the network ----------------------------------------------------------------------------- */

#define MAX_LAYERS 16

typedef struct Layer {
    int K, R;                      /* inputs (the embedding or the layer below), K + H */
    Mat W, gW;                     /* R x 4H: W_x over W_h, and its gradient */
    float *b, *gb;                 /* 4H, padded to the panels */
    float *h, *c, *c0;             /* L x H: the state, and the cell at the block's start */
    float *xin;                    /* block x L x R: each step's [x ; h_{t-1}] */
    float *gates, *cs, *tcs;       /* block x L x Gp (i, f, g, o after their squashes), x H, x H */
    float *dgates;                 /* block x L x Gp */
    float *dh_in;                  /* block x L x H: d(code length)/d h_t from above */
} Layer;

typedef struct Deep {
    int L, V, D, H, layers, block, G, Gp, Vp, onehot, frozen, copies, t;
    double lr, beta1, beta2, clip, c1, c2;
    size_t size, learn_from;       /* parameters, and the first that learns (the rest are frozen) */
    float *param, *grad, *m1, *m2;
    float *emb, *gemb;             /* V x D (the identity for a run with one-hot inputs) */
    Mat Wo, gWo;                   /* H x V */
    float *bo, *gbo;               /* V, padded */
    Layer layer[MAX_LAYERS];
    float *top;                    /* block x L x H: the top layer's h_t */
    float *partial;                /* back()'s partial sums: (max(D, H) + H) x BACK_N x 16 */
    double *work;                  /* the cell's: 4H */
    Pun *pun;                      /* 8H */
    float *logits_p, *logits;      /* L x Vp, L x V */
    float *dlogits, *dlog_p;       /* block x L x V (the kernel's), block x L x Vp (scaled) */
    float *dh, *dc, *dx;           /* L x H, L x H, block x L x max(D, H) */
    int64_t *inputs;               /* (block + 1) x L */
    size_t bias_at[MAX_LAYERS];     /* each layer's bias, for its copies (see adam) */
    Pool pool;
} Deep;

static void *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

void cm_deep_free(Deep *d) {
    if (!d) return;
    if (d->pool.running) {
        atomic_store(&d->pool.quit, 1);
        pthread_join(d->pool.thread, NULL);
    }
    free(d->param); free(d->grad); free(d->m1); free(d->m2);
    if (d->onehot) free(d->emb);
    for (int k = 0; k < d->layers; k++) {
        Layer *y = &d->layer[k];
        free(y->h); free(y->c); free(y->c0); free(y->xin); free(y->gates); free(y->cs); free(y->tcs);
        free(y->dgates); free(y->dh_in);
    }
    free(d->top); free(d->logits_p); free(d->logits); free(d->dlogits); free(d->dlog_p);
    free(d->dh); free(d->dc); free(d->dx); free(d->inputs); free(d->partial); free(d->work); free(d->pun);
    free(d);
}

/* Lays the parameters out in one array, bottom to top (embedding, each layer's W and b, the output
 * layer), so that "the top parts learn" is a suffix of it; then points every part, and its gradient
 * alike, into the arrays. */
static size_t layout(Deep *d, size_t *w_at, size_t *b_at) {
    size_t at = d->onehot ? 0 : (size_t)d->V * d->D;
    for (int k = 0; k <= d->layers; k++) {  /* k == layers: the output layer */
        int rows = k == d->layers ? d->H : (k ? d->H : d->D) + d->H, cols = k == d->layers ? d->V : d->G;
        w_at[k] = at;
        at += mat_size(rows, cols);
        b_at[k] = at;
        at += (size_t)(cols + PANEL - 1) / PANEL * PANEL;
    }
    return at;
}

static void place(Deep *d, const size_t *w_at, const size_t *b_at) {
    float *p = d->param, *g = d->grad;
    if (!d->onehot) { d->emb = p; d->gemb = g; }
    for (int k = 0; k < d->layers; k++) {
        Layer *y = &d->layer[k];
        y->K = k ? d->H : d->D;
        y->R = y->K + d->H;
        y->W = mat_at(p + w_at[k], y->R, d->G);
        y->gW = mat_at(g + w_at[k], y->R, d->G);
        y->b = p + b_at[k];
        y->gb = g + b_at[k];
        d->bias_at[k] = b_at[k];
    }
    d->Wo = mat_at(p + w_at[d->layers], d->H, d->V);
    d->gWo = mat_at(g + w_at[d->layers], d->H, d->V);
    d->bo = p + b_at[d->layers];
    d->gbo = g + b_at[d->layers];
}

static int buffers(Deep *d) {
    const size_t L = d->L, T = d->block, H = d->H;
    int ok = 1;
    for (int k = 0; k < d->layers; k++) {
        Layer *y = &d->layer[k];
        ok &= !!(y->h = zeros(L * H)) & !!(y->c = zeros(L * H)) & !!(y->c0 = zeros(L * H));
        ok &= !!(y->xin = zeros(T * L * y->R)) & !!(y->gates = zeros(T * L * d->Gp));
        ok &= !!(y->cs = zeros(T * L * H)) & !!(y->tcs = zeros(T * L * H));
        ok &= !!(y->dgates = zeros(T * L * d->Gp)) & !!(y->dh_in = zeros(T * L * H));
    }
    size_t wide = (size_t)(d->D > d->H ? d->D : d->H);
    ok &= !!(d->top = zeros(T * L * H)) & !!(d->logits_p = zeros(L * d->Vp)) & !!(d->logits = zeros(L * d->V));
    ok &= !!(d->dlogits = zeros(T * L * d->V)) & !!(d->dlog_p = zeros(T * L * d->Vp));
    ok &= !!(d->dh = zeros(L * H)) & !!(d->dc = zeros(L * H)) & !!(d->dx = zeros(T * L * wide));
    ok &= !!(d->inputs = malloc((T + 1) * L * sizeof(int64_t)));
    ok &= !!(d->partial = zeros((wide + H + BACK_R) * BACK_N * 16));
    ok &= !!(d->work = calloc(4 * H, sizeof(double))) & !!(d->pun = calloc(8 * H, sizeof(Pun)));
    return ok;
}

/* `weights`: torch's tensors one after another: the embedding V x D (none for one-hot inputs), then
 * for each layer W_x (4H x K) and W_h (4H x H) as nn.LSTM keeps them (`transposed`) or K x 4H and
 * H x 4H (the scratch cells, gates side by side), and b (4H); then the output layer's weight, V x H
 * (transposed) or H x V, and bias (V). `copies`: how many bias vectors torch adds up per layer
 * (nn.LSTM's b_ih and b_hh: 2), each of which its Adam moves alike. `frozen`: the parts, from the
 * bottom (the embedding, then each layer), that do not learn. `threads`: 1 or 2. */
Deep *cm_deep_new(int lanes, int V, int D, int H, int layers, int block, double lr, double beta1,
                  double beta2, double clip, int start, int copies, int frozen, int threads,
                  int transposed, const float *weights) {
    if (layers < 1 || layers > MAX_LAYERS) return NULL;
    Deep *d = calloc(1, sizeof(Deep));
    if (!d) return NULL;
    d->L = lanes; d->V = V; d->onehot = D == 0; d->D = D ? D : V; d->H = H; d->layers = layers;
    d->block = block; d->G = 4 * H; d->Gp = (d->G + PANEL - 1) / PANEL * PANEL;
    d->Vp = (V + PANEL - 1) / PANEL * PANEL;
    d->lr = lr; d->beta1 = beta1; d->beta2 = beta2; d->clip = clip; d->c1 = d->c2 = 1.0;
    d->copies = copies; d->frozen = frozen;
    size_t w_at[MAX_LAYERS + 1], b_at[MAX_LAYERS + 1];
    d->size = layout(d, w_at, b_at);
    d->param = zeros(d->size); d->grad = zeros(d->size); d->m1 = zeros(d->size); d->m2 = zeros(d->size);
    if (d->onehot) d->emb = zeros((size_t)V * V);
    if (!d->param || !d->grad || !d->m1 || !d->m2 || (d->onehot && !d->emb)) {
        cm_deep_free(d);
        return NULL;
    }
    place(d, w_at, b_at);
    if (!buffers(d)) {
        cm_deep_free(d);
        return NULL;
    }
    const float *w = weights;
    if (d->onehot) for (int v = 0; v < V; v++) d->emb[(size_t)v * V + v] = 1.0f;
    else { memcpy(d->emb, w, (size_t)V * D * sizeof(float)); w += (size_t)V * D; }
    for (int k = 0; k < layers; k++) {
        Layer *y = &d->layer[k];
        float *tmp = zeros((size_t)y->R * d->G);
        if (!tmp) { cm_deep_free(d); return NULL; }
        /* as rows by input (R x 4H) first, then into the panels */
        for (int part = 0; part < 2; part++) {
            int rows = part ? H : y->K, off = part ? y->K : 0;
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < d->G; j++)
                    tmp[(size_t)(off + r) * d->G + j] = transposed ? w[(size_t)j * rows + r] : w[(size_t)r * d->G + j];
            w += (size_t)rows * d->G;
        }
        pack(&y->W, tmp, 0);
        free(tmp);
        memcpy(y->b, w, (size_t)d->G * sizeof(float));
        w += d->G;
    }
    pack(&d->Wo, w, transposed);
    w += (size_t)V * H;
    memcpy(d->bo, w, (size_t)V * sizeof(float));
    /* the first parameter that learns: the embedding's, or a layer's W, or the output layer's */
    d->learn_from = frozen <= 0 ? 0 : frozen > layers ? (size_t)(d->Wo.w - d->param)
                                                      : (size_t)(d->layer[frozen - 1].W.w - d->param);
    if (d->onehot && frozen <= 0) d->learn_from = (size_t)(d->layer[0].W.w - d->param);
    for (int l = 0; l < lanes; l++) d->inputs[l] = start;
    if (threads > 1 && pthread_create(&d->pool.thread, NULL, helper, &d->pool) == 0) d->pool.running = 1;
    return d;
}


/* One layer's step for every lane: [x ; h_{t-1}] in, the gates, c_t and h_t out (h_t also to `next`,
 * the layer above's input, stride `ldn`). */
static void layer_step(Deep *d, Layer *y, float *next, int ldn) {
    const int L = d->L, H = d->H, Gp = d->Gp;
    const size_t n0 = (size_t)d->t * L;
    float *gates = y->gates + n0 * Gp, *xin = y->xin + n0 * y->R;
    for (int l = 0; l < L; l++) memcpy(xin + (size_t)l * y->R + y->K, y->h + (size_t)l * H, H * sizeof(float));
    forward(&d->pool, &y->W, y->b, xin, y->R, L, gates, Gp);
    for (int l = 0; l < L; l++) {
        float *g = gates + (size_t)l * Gp, *c = y->c + (size_t)l * H, *h = y->h + (size_t)l * H;
        cell(g, c, y->cs + (n0 + l) * H, y->tcs + (n0 + l) * H, h, H, d->work, d->pun);
        memcpy(next + (size_t)l * ldn, h, H * sizeof(float));
    }
}

/* The logits (L x V) of every lane's next symbol; the state moves on by one. */
const float *cm_deep_forward(Deep *d) {
    const int L = d->L, D = d->D, H = d->H;
    const size_t n0 = (size_t)d->t * L;
    Layer *bottom = &d->layer[0];
    for (int l = 0; l < L; l++)
        memcpy(bottom->xin + (n0 + l) * bottom->R, d->emb + (size_t)d->inputs[n0 + l] * D, D * sizeof(float));
    for (int k = 0; k < d->layers; k++) {
        Layer *y = &d->layer[k];
        if (k + 1 < d->layers) layer_step(d, y, d->layer[k + 1].xin + n0 * d->layer[k + 1].R, d->layer[k + 1].R);
        else layer_step(d, y, d->top + n0 * H, H);
    }
    forward(&d->pool, &d->Wo, d->bo, d->top + n0 * H, H, L, d->logits_p, d->Vp);
    for (int l = 0; l < L; l++)
        memcpy(d->logits + (size_t)l * d->V, d->logits_p + (size_t)l * d->Vp, d->V * sizeof(float));
    return d->logits;
}

float *cm_deep_dlogits(Deep *d) { return d->dlogits + (size_t)d->t * d->L * d->V; }
int64_t *cm_deep_inputs(Deep *d) { return d->inputs + (size_t)(d->t + 1) * d->L; }

/* G[j] = sum over n, ascending, of g[n][j] (the bias's gradient). */
static void column_sums(float *G, const float *g, int ldg, int N, int cols) {
    memset(G, 0, cols * sizeof(float));
    for (int n = 0; n < N; n++) axpy(G, g + (size_t)n * ldg, 1.0f, cols);
}

/* Backpropagation through the block in one layer, step by step from the last, all lanes at once:
 * dgates from dh_in and the cell's own recurrence (d2l §9.7 for the equations' derivatives). */
static void layer_back(Deep *d, Layer *y) {
    const int L = d->L, H = d->H, Gp = d->Gp, T = d->t;
    memset(d->dh, 0, (size_t)L * H * sizeof(float));
    memset(d->dc, 0, (size_t)L * H * sizeof(float));
    for (int t = T - 1; t >= 0; t--) {
        for (int l = 0; l < L; l++) {
            size_t n = (size_t)t * L + l;
            const float *g = y->gates + n * Gp, *tc = y->tcs + n * H, *up = y->dh_in + n * H;
            const float *cp = t ? y->cs + (n - L) * H : y->c0 + (size_t)l * H;
            float *dg = y->dgates + n * Gp, *dh = d->dh + (size_t)l * H, *dc = d->dc + (size_t)l * H;
            for (int j = 0; j < H; j++) {
                float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j], dhj = up[j] + dh[j];
                float dcj = dc[j] + dhj * o * (1.0f - tc[j] * tc[j]);
                dg[3 * H + j] = dhj * tc[j] * o * (1.0f - o);
                dg[j] = dcj * gg * i * (1.0f - i);
                dg[2 * H + j] = dcj * i * (1.0f - gg * gg);
                dg[H + j] = dcj * cp[j] * f * (1.0f - f);
                dc[j] = dcj * f;
            }
        }
        if (t) back(&d->pool, &y->W, y->K, y->R, y->dgates + (size_t)t * L * Gp, Gp, L, d->dh, H, d->partial);
    }
    outer(&d->pool, &y->gW, y->xin, y->R, y->dgates, Gp, T * L);
    column_sums(y->gb, y->dgates, Gp, T * L, d->G);
}

/* The gradient of the block's mean code length, for the parts that learn. */
static void gradients(Deep *d) {
    const int L = d->L, H = d->H, V = d->V, T = d->t, N = T * L;
    const float scale = 1.0f / (float)(L * T);  /* the mean code length per symbol, as in torch */
    for (int n = 0; n < N; n++)
        for (int v = 0; v < V; v++) d->dlog_p[(size_t)n * d->Vp + v] = d->dlogits[(size_t)n * V + v] * scale;
    outer(&d->pool, &d->gWo, d->top, H, d->dlog_p, d->Vp, N);
    column_sums(d->gbo, d->dlog_p, d->Vp, N, V);
    int lowest = d->frozen > 0 ? d->frozen - 1 : 0;  /* the lowest layer that learns */
    if (lowest >= d->layers) return;
    back(&d->pool, &d->Wo, 0, H, d->dlog_p, d->Vp, N, d->layer[d->layers - 1].dh_in, H, d->partial);
    for (int k = d->layers - 1; k >= lowest; k--) {
        Layer *y = &d->layer[k];
        layer_back(d, y);
        if (k > lowest) back(&d->pool, &y->W, 0, y->K, y->dgates, d->Gp, N, d->layer[k - 1].dh_in, H, d->partial);
    }
    if (d->frozen > 0 || d->onehot) return;
    Layer *y = &d->layer[0];
    back(&d->pool, &y->W, 0, y->K, y->dgates, d->Gp, N, d->dx, d->D, d->partial);
    memset(d->gemb, 0, (size_t)V * d->D * sizeof(float));
    for (int n = 0; n < N; n++) axpy(d->gemb + (size_t)d->inputs[n] * d->D, d->dx + (size_t)n * d->D, 1.0f, d->D);
}

/* Gradient norm clipping and one Adam step, as torch's clip_grad_norm_ and Adam over the parts
 * that learn; a bias torch keeps as `copies` vectors counts that often in the norm and moves that
 * many times as far (each copy takes the same step). */
static void adam(Deep *d) {
    const size_t from = d->learn_from;
    double sq = sum_squares(d->grad + from, d->size - from);
    for (int k = 0; k < d->layers; k++)
        if (d->bias_at[k] >= from) sq += (d->copies - 1) * sum_squares(d->grad + d->bias_at[k], d->Gp);
    double norm = sqrt(sq);
    float factor = norm > d->clip ? (float)(d->clip / (norm + 1e-6)) : 1.0f;
    d->c1 *= d->beta1;
    d->c2 *= d->beta2;
    const float step = (float)(d->lr / (1.0 - d->c1)), root = (float)sqrt(1.0 - d->c2);
    const float b1 = (float)d->beta1, b2 = (float)d->beta2;
    adam_update(d->param + from, d->param + from, d->grad + from, d->m1 + from, d->m2 + from,
                d->size - from, factor, step, root, b1, b2);
    for (int k = 0; k < d->layers && d->copies > 1; k++) {  /* the other copies' steps, the same */
        size_t at = d->bias_at[k];
        if (at < from) continue;
        for (size_t i = 0; i < (size_t)d->Gp; i++)
            d->param[at + i] -= (float)(d->copies - 1) * (step * d->m1[at + i] /
                                                         (sqrtf(d->m2[at + i]) / root + 1e-8f));
    }
}

/* After the kernel's step: at the end of a block, learn from it (unless nothing is left to code). */
void cm_deep_advance(Deep *d, int more_to_come) {
    d->t++;
    if (d->t < d->block) return;
    if (more_to_come && d->lr > 0 && d->frozen <= d->layers + 1) {
        gradients(d);
        adam(d);
    }
    for (int k = 0; k < d->layers; k++)
        memcpy(d->layer[k].c0, d->layer[k].c, (size_t)d->L * d->H * sizeof(float));
    memcpy(d->inputs, d->inputs + (size_t)d->block * d->L, (size_t)d->L * sizeof(int64_t));
    d->t = 0;
}
