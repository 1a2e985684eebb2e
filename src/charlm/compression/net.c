/* The online mode's network in C: a one-layer LSTM over bytes, stepping and learning while coding.
 *
 * Coding one lane one symbol at a time is what compresses best (every symbol is predicted from the
 * text right before it), and at one lane a torch call per symbol costs far more than the network's
 * arithmetic. This is the book's LSTM (d2l §9.2) with its gates in torch's order (i, f, g, o):
 *
 *   gates = W_x x_t + W_h h_{t-1} + b,  c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t),
 *   logits_t = W_o h_t + b_o,           x_t = the embedding of the previous symbol,
 *
 * started from the weights torch initialises with the archive's seed, trained by backpropagation
 * through each block of `block` steps (from the state at its start) and Adam, with the gradient
 * clipped to norm `clip`. The gradient of the code length with respect to the logits comes from
 * the kernel (kernel.c) step by step.
 *
 * Float32 throughout, in a fixed order of operations: the matrix products run as sums of scaled
 * rows (vectorisable without reordering any sum), and sums that must reduce use fixed partial
 * sums. The sigmoid and tanh are exact.h's squash, over arrays (cell.h): this file is compiled as
 * part of kernel.c, which includes it after kernel.h. The decoder repeats all of it bit for bit.
 */

#include <pthread.h>

#include "cell.h"   /* the cell's squashes, vectorised */

/* What the backward pass needs of one block: its steps' inputs, activations and gradients. */
typedef struct {
    const float *h0, *c0;
    const int64_t *inputs;
    const float *acts, *dlogits;
    int T;
} Block;

typedef struct Net {
    int L, V, D, H, block;         /* lanes, symbols (in and out), embedding width, hidden units */
    double lr, beta1, beta2, clip;
    int G;                         /* 4H */
    /* parameters, each with its gradient and Adam's moments: one flat array in this order */
    size_t size;
    float *param, *grad, *m1, *m2;
    float *next;                   /* size: the parameters after the owed Adam step (the learner's) */
    float *emb, *wx, *wh, *b, *wo, *bo;    /* V x D, D x 4H, H x 4H, 4H, H x V, V (row k: input k) */
    float *gemb, *gwx, *gwh, *gb, *gwo, *gbo;
    /* state and what the backward pass needs of each step of the block */
    float *h, *c;                  /* L x H */
    float *h0, *c0;                /* L x H: the state at the block's start */
    int64_t *inputs;               /* block x L */
    float *acts;                   /* block x L x (4H gates + H c + H tanh c + H h) */
    float *dlogits;                /* block x L x V: the kernel's gradients */
    float *logits;                 /* L x V */
    int t;                         /* steps into the block */
    float *dh, *dc, *dg;           /* scratch */
    double *work;                  /* the cell's: 4H */
    Pun *pun;                      /* 8H */
    double c1, c2;                 /* beta1^steps, beta2^steps: Adam's bias corrections */
    /* the learner: a thread of its own backpropagates through one block while the next is coded */
    int half;                      /* which half of the double buffers the block being coded fills */
    Block job;
    int started, pending, ready, quit;  /* the thread runs; a gradient is owed; a job waits; stop */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t go, done;
} Net;


static void axpy(float *restrict y, const float *restrict x, float a, int n) {  /* y += a x */
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* x . y in a fixed order: eight running sums (one vector register), then a fixed tree. */
static float dotf(const float *restrict x, const float *restrict y, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j] * y[i + j];
    for (; i < n; i++) acc[0] += x[i] * y[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* Transposes: rows k of `w` (n x m) become columns. */
static void transpose(float *out, const float *w, int n, int m) {
    for (int k = 0; k < n; k++)
        for (int j = 0; j < m; j++) out[(size_t)j * n + k] = w[(size_t)k * m + j];
}

static void learner_stop(Net *n);

void cm_net_free(Net *n) {
    if (!n) return;
    learner_stop(n);
    free(n->param); free(n->next); free(n->grad); free(n->m1); free(n->m2);
    free(n->h); free(n->c); free(n->h0); free(n->c0); free(n->inputs); free(n->acts); free(n->dlogits);
    free(n->logits); free(n->dh); free(n->dc); free(n->dg); free(n->work); free(n->pun);
    free(n);
}

/* The parameters' places in a flat array p (n->param, n->grad), in the order of Net's fields. */
static void point_at(const Net *n, float *p, float **emb, float **wx, float **wh, float **b, float **wo,
                     float **bo) {
    const size_t V = (size_t)n->V, D = (size_t)n->D, H = (size_t)n->H, G = (size_t)n->G;
    *emb = p; p += V * D;
    *wx = p; p += D * G;
    *wh = p; p += H * G;
    *b = p; p += G;
    *wo = p; p += H * V;
    *bo = p;
}

/* Torch's layouts in: emb (V x D), w_ih (4H x D), w_hh (4H x H), b (4H: b_ih + b_hh), w_out (V x H),
 * b_out (V). `start`: every lane's first input. */
Net *cm_net_new(int lanes, int V, int D, int H, int block, double lr, double beta1, double beta2,
                double clip, int start, const float *emb, const float *w_ih, const float *w_hh,
                const float *b, const float *w_out, const float *b_out) {
    Net *n = calloc(1, sizeof(Net));
    if (!n) return NULL;
    n->L = lanes; n->V = V; n->D = D; n->H = H; n->G = 4 * H; n->block = block;
    n->lr = lr; n->beta1 = beta1; n->beta2 = beta2; n->clip = clip; n->c1 = n->c2 = 1.0;
    size_t G = (size_t)n->G;
    n->size = (size_t)V * D + D * G + H * G + G + (size_t)H * V + V;
    n->param = calloc(n->size, sizeof(float));
    n->next = calloc(n->size, sizeof(float));
    n->grad = calloc(n->size, sizeof(float));
    n->m1 = calloc(n->size, sizeof(float));
    n->m2 = calloc(n->size, sizeof(float));
    n->h = calloc((size_t)lanes * H, sizeof(float));
    n->c = calloc((size_t)lanes * H, sizeof(float));
    /* double buffers: one half for the block being coded, the other for the learner */
    n->h0 = calloc((size_t)2 * lanes * H, sizeof(float));
    n->c0 = calloc((size_t)2 * lanes * H, sizeof(float));
    n->inputs = malloc((size_t)2 * (block + 1) * lanes * sizeof(int64_t));
    n->acts = malloc((size_t)2 * block * lanes * (G + 3 * H) * sizeof(float));
    n->dlogits = calloc((size_t)2 * block * lanes * V, sizeof(float));
    n->logits = malloc((size_t)lanes * V * sizeof(float));
    n->dh = malloc(H * sizeof(float));
    n->dc = malloc(H * sizeof(float));
    n->dg = malloc(G * sizeof(float));
    n->work = malloc(G * sizeof(double));
    n->pun = malloc(2 * G * sizeof(Pun));
    if (!n->work || !n->pun || !n->next || !n->param || !n->grad || !n->m1 || !n->m2 || !n->h || !n->c ||
        !n->h0 || !n->c0 || !n->inputs || !n->acts || !n->dlogits || !n->logits || !n->dh || !n->dc ||
        !n->dg) {
        cm_net_free(n);
        return NULL;
    }
    point_at(n, n->param, &n->emb, &n->wx, &n->wh, &n->b, &n->wo, &n->bo);
    point_at(n, n->grad, &n->gemb, &n->gwx, &n->gwh, &n->gb, &n->gwo, &n->gbo);
    memcpy(n->emb, emb, (size_t)V * D * sizeof(float));
    transpose(n->wx, w_ih, n->G, D);  /* torch's (4H x D) -> rows by input */
    transpose(n->wh, w_hh, n->G, H);
    memcpy(n->b, b, G * sizeof(float));
    transpose(n->wo, w_out, V, H);
    memcpy(n->bo, b_out, (size_t)V * sizeof(float));
    for (int l = 0; l < lanes; l++) n->inputs[l] = start;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->go, NULL);
    pthread_cond_init(&n->done, NULL);
    return n;
}

/* The halves of the double buffers. */
static float *acts_of(const Net *n, int half) {
    return n->acts + (size_t)half * n->block * n->L * (n->G + 3 * n->H);
}
static float *dlogits_of(const Net *n, int half) { return n->dlogits + (size_t)half * n->block * n->L * n->V; }
static int64_t *inputs_of(const Net *n, int half) { return n->inputs + (size_t)half * (n->block + 1) * n->L; }
static float *h0_of(const Net *n, int half) { return n->h0 + (size_t)half * n->L * n->H; }
static float *c0_of(const Net *n, int half) { return n->c0 + (size_t)half * n->L * n->H; }

/* out = b + sum_k x1[k] w1[k] + sum_k x2[k] w2[k] (rows of N): each output its own sum, in that
 * order, as adding scaled rows computes it; 32 outputs at a time held in registers, so that each
 * weight is read once and the sums are not written back and read again per row. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8fu __attribute__((vector_size(32), aligned(4)));  /* unaligned loads and stores */

static void affine(float *restrict out, const float *restrict b, const float *restrict w1,
                   const float *restrict x1, int K1, const float *restrict w2, const float *restrict x2,
                   int K2, int N) {
    int j = 0;
    for (; j + 32 <= N; j += 32) {
        v8f a0 = *(const v8fu *)(b + j), a1 = *(const v8fu *)(b + j + 8);
        v8f a2 = *(const v8fu *)(b + j + 16), a3 = *(const v8fu *)(b + j + 24);
        for (int part = 0; part < 2; part++) {
            const float *w = part ? w2 : w1, *x = part ? x2 : x1;
            for (int k = 0, K = part ? K2 : K1; k < K; k++) {
                const float *r = w + (size_t)k * N + j;
                a0 += *(const v8fu *)r * x[k]; a1 += *(const v8fu *)(r + 8) * x[k];
                a2 += *(const v8fu *)(r + 16) * x[k]; a3 += *(const v8fu *)(r + 24) * x[k];
            }
        }
        *(v8fu *)(out + j) = a0; *(v8fu *)(out + j + 8) = a1;
        *(v8fu *)(out + j + 16) = a2; *(v8fu *)(out + j + 24) = a3;
    }
    for (; j < N; j++) {  /* what is left over, one output at a time in the same order */
        float a = b[j];
        for (int k = 0; k < K1; k++) a += w1[(size_t)k * N + j] * x1[k];
        for (int k = 0; k < K2; k++) a += w2[(size_t)k * N + j] * x2[k];
        out[j] = a;
    }
}

/* The logits (L x V) of every lane's next symbol; the state moves on by one. */
const float *cm_net_forward(Net *n) {
    const int H = n->H, G = n->G, D = n->D, V = n->V;
    for (int l = 0; l < n->L; l++) {
        float *act = acts_of(n, n->half) + ((size_t)n->t * n->L + l) * (G + 3 * H);
        float *gates = act, *c = act + G, *tc = c + H, *h = tc + H;
        float *hl = n->h + (size_t)l * H, *cl = n->c + (size_t)l * H;
        const float *x = n->emb + (size_t)inputs_of(n, n->half)[(size_t)n->t * n->L + l] * D;
        affine(gates, n->b, n->wx, x, D, n->wh, hl, H, G);
        cell(gates, cl, c, tc, h, H, n->work, n->pun);  /* cl moves on to c_t */
        memcpy(hl, h, H * sizeof(float));
        float *logits = n->logits + (size_t)l * V;
        affine(logits, n->bo, n->wo, h, H, NULL, NULL, 0, V);
    }
    return n->logits;
}

/* Where the kernel writes this step's gradients (L x V) and the next inputs (L). */
float *cm_net_dlogits(Net *n) { return dlogits_of(n, n->half) + (size_t)n->t * n->L * n->V; }
int64_t *cm_net_inputs(Net *n) { return inputs_of(n, n->half) + (size_t)(n->t + 1) * n->L; }

static double sum_squares(const float *x, size_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * x[i]; s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2]; s3 += (double)x[i + 3] * x[i + 3];
    }
    for (; i < n; i++) s0 += (double)x[i] * x[i];
    return (s0 + s1) + (s2 + s3);
}

/* One Adam step (Kingma & Ba, 2015) on `size` parameters, their gradient scaled by `factor` (the
 * clipping), written to `next` (which may be `param`); `step` and `root` hold the bias corrections. Vectorised: sqrt and
 * division round alike in vectors. */
static void adam_update(float *next, const float *param, const float *restrict grad,
                        float *restrict m1, float *restrict m2, size_t size, float factor, float step,
                        float root, float b1, float b2) {
    for (size_t i = 0; i < size; i++) {
        float g = grad[i] * factor;
        m1[i] = b1 * m1[i] + (1.0f - b1) * g;
        m2[i] = b2 * m2[i] + (1.0f - b2) * g * g;
        next[i] = param[i] - step * m1[i] / (sqrtf(m2[i]) / root + 1e-8f);
    }
}

/* Backpropagation through a block coded earlier, into n->grad (the weights as they are now). */
static void backprop(Net *n, const Block *blk) {
    const int H = n->H, G = n->G, D = n->D, V = n->V, L = n->L, T = blk->T;
    const float scale = 1.0f / (float)(L * T);  /* the mean code length per symbol, as in torch */
    memset(n->grad, 0, n->size * sizeof(float));
    for (int l = 0; l < L; l++) {
        memset(n->dh, 0, H * sizeof(float));
        memset(n->dc, 0, H * sizeof(float));
        for (int t = T - 1; t >= 0; t--) {
            const float *act = blk->acts + ((size_t)t * L + l) * (G + 3 * H);
            const float *gates = act, *tc = act + G + H, *h = tc + H;
            const float *hp = t ? blk->acts + ((size_t)(t - 1) * L + l) * (G + 3 * H) + G + 2 * H
                                : blk->h0 + (size_t)l * H;
            const float *cp = t ? blk->acts + ((size_t)(t - 1) * L + l) * (G + 3 * H) + G
                                : blk->c0 + (size_t)l * H;
            const float *dlog = blk->dlogits + ((size_t)t * L + l) * V;
            int64_t input = blk->inputs[(size_t)t * L + l];
            /* the output layer */
            axpy(n->gbo, dlog, scale, V);
            for (int k = 0; k < H; k++) {
                n->dh[k] += dotf(n->wo + (size_t)k * V, dlog, V) * scale;
                axpy(n->gwo + (size_t)k * V, dlog, h[k] * scale, V);
            }
            /* the cell */
            float *dg = n->dg;
            for (int j = 0; j < H; j++) {
                float i = gates[j], f = gates[H + j], gg = gates[2 * H + j], o = gates[3 * H + j];
                float dc = n->dc[j] + n->dh[j] * o * (1.0f - tc[j] * tc[j]);
                dg[3 * H + j] = n->dh[j] * tc[j] * o * (1.0f - o);
                dg[j] = dc * gg * i * (1.0f - i);
                dg[2 * H + j] = dc * i * (1.0f - gg * gg);
                dg[H + j] = dc * cp[j] * f * (1.0f - f);
                n->dc[j] = dc * f;  /* to the step before */
            }
            for (int j = 0; j < G; j++) n->gb[j] += dg[j];
            const float *x = n->emb + (size_t)input * D;
            for (int k = 0; k < D; k++) axpy(n->gwx + (size_t)k * G, dg, x[k], G);
            for (int k = 0; k < H; k++) axpy(n->gwh + (size_t)k * G, dg, hp[k], G);
            for (int k = 0; k < D; k++) n->gemb[(size_t)input * D + k] += dotf(n->wx + (size_t)k * G, dg, G);
            for (int k = 0; k < H; k++) n->dh[k] = dotf(n->wh + (size_t)k * G, dg, G);  /* to the step before */
        }
    }
}

/* One Adam step on n->grad, its norm clipped to n->clip, into n->next: the learner computes it
 * right after the gradient, while the coding thread still reads n->param, so that the step owed at
 * the block's end (apply) is only a swap of the two arrays, and the coding thread does none of it. */
static void adam_next(Net *n) {
    double norm = sqrt(sum_squares(n->grad, n->size));
    float factor = norm > n->clip ? (float)(n->clip / (norm + 1e-6)) : 1.0f;
    n->c1 *= n->beta1;
    n->c2 *= n->beta2;
    const float step = (float)(n->lr / (1.0 - n->c1)), root = (float)sqrt(1.0 - n->c2);
    adam_update(n->next, n->param, n->grad, n->m1, n->m2, n->size, factor, step, root, (float)n->beta1,
                (float)n->beta2);
}

/* The owed Adam step takes effect: the weights become n->next. */
static void apply(Net *n) {
    float *was = n->param;
    n->param = n->next;
    n->next = was;
    point_at(n, n->param, &n->emb, &n->wx, &n->wh, &n->b, &n->wo, &n->bo);
}

/* What the learner does with a finished block: its gradient, then the step it owes. */
static void learn_block(Net *n, const Block *blk) {
    backprop(n, blk);
    adam_next(n);
}

/* ---- the learner thread ------------------------------------------------------------------------
 * Backpropagation costs about as much as coding, and needs only what a finished block left behind,
 * so it runs beside the coding of the next block, on the second core where there is one. The
 * gradient of block k is applied at the end of block k + 1: every block is coded with the weights
 * learnt up to two blocks before it. The schedule is fixed (never "whenever the thread is done"),
 * so encoder and decoder take the very same steps, on one core or many. */

static void *learner_main(void *arg) {
    Net *n = arg;
    pthread_mutex_lock(&n->lock);
    for (;;) {
        while (!n->ready && !n->quit) pthread_cond_wait(&n->go, &n->lock);
        if (n->quit) break;
        pthread_mutex_unlock(&n->lock);
        learn_block(n, &n->job);
        pthread_mutex_lock(&n->lock);
        n->ready = 0;
        pthread_cond_signal(&n->done);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

/* Wait until the thread is done with the block it was handed, if any; its gradient stays owed. */
static void learner_join(Net *n) {
    if (!n->pending || n->started <= 0) return;
    pthread_mutex_lock(&n->lock);
    while (n->ready) pthread_cond_wait(&n->done, &n->lock);
    pthread_mutex_unlock(&n->lock);
}

/* Wait for the gradient owed, if any, and take it. */
static void learner_wait(Net *n) {
    learner_join(n);
    n->pending = 0;
}

/* Hand a finished block to the thread (or compute it here where no thread can start). */
static void learner_start(Net *n, int half) {
    n->job = (Block){h0_of(n, half), c0_of(n, half), inputs_of(n, half), acts_of(n, half),
                     dlogits_of(n, half), n->t};
    if (!n->started) n->started = pthread_create(&n->thread, NULL, learner_main, n) == 0 ? 1 : -1;
    if (n->started < 0) {  /* the same steps in the same order, one after the other */
        learn_block(n, &n->job);
        n->pending = 1;
        return;
    }
    pthread_mutex_lock(&n->lock);
    n->ready = 1;
    n->pending = 1;
    pthread_cond_signal(&n->go);
    pthread_mutex_unlock(&n->lock);
}

/* For the tests: every gradient computed in the coding thread, on the same schedule. */
void cm_net_serial(Net *n) {
    if (!n->started) n->started = -1;
}

static void learner_stop(Net *n) {
    if (n->started <= 0) return;
    learner_wait(n);
    pthread_mutex_lock(&n->lock);
    n->quit = 1;
    pthread_cond_signal(&n->go);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->thread, NULL);
    n->started = 0;
}

/* After the kernel's step: at the end of a block, apply the gradient of the block before it and
 * hand this one to the learner (unless nothing is left to code); the next block fills the other
 * half of the buffers. */
void cm_net_advance(Net *n, int more_to_come) {
    n->t++;
    if (n->t < n->block) return;
    int half = n->half, next = 1 - half;
    if (more_to_come && n->lr > 0) {
        if (n->pending) { learner_wait(n); apply(n); }
        learner_start(n, half);
    } else {
        /* The end of a segment: the block before this one may still be being learnt, from the half
         * that the next block fills. Its gradient is applied on schedule, at the next block's end;
         * only the buffers must wait for the thread, or a busy machine would let the next segment
         * overwrite them mid-learning, and the encoder and the decoder would learn different things. */
        learner_join(n);
    }
    memcpy(h0_of(n, next), n->h, (size_t)n->L * n->H * sizeof(float));
    memcpy(c0_of(n, next), n->c, (size_t)n->L * n->H * sizeof(float));
    memcpy(inputs_of(n, next), inputs_of(n, half) + (size_t)n->block * n->L, (size_t)n->L * sizeof(int64_t));
    n->half = next;
    n->t = 0;
}
