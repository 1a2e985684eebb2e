/* The LSTM cell that both networks step (net.c's online one, deepnet.c's pretrained one): 5H
 * squashes a step, over whole arrays (exact.h's squashes), so that they vectorise.
 */
#ifndef CHARLM_CELL_H
#define CHARLM_CELL_H

#include "exact.h"  /* squashes, Pun */

/* The cell of every unit of one lane, from its gates' sums g (4H, torch's order i, f, g, o): i, f,
 * o = sigmoid, g = tanh (as 2 squash(2x) - 1), c_t = f c_{t-1} + i g, h_t = o tanh(c_t). On return g
 * holds the gates after their squashes, c (in: c_{t-1}) and cs hold c_t, tcs tanh(c_t), h h_t.
 * `work`: 4H doubles; `pun`: 8H Puns. */
static void cell(float *restrict g, float *restrict c, float *restrict cs, float *restrict tcs,
                 float *restrict h, int H, double *restrict work, Pun *restrict pun) {
    for (int j = 0; j < 4 * H; j++) {
        double times = j >= 2 * H && j < 3 * H ? 2.0 : 1.0;
        work[j] = times * (double)g[j];
    }
    squashes(work, pun, 4 * H);
    for (int j = 0; j < 4 * H; j++) {  /* sigmoid: 1 q - 0; tanh: 2 q - 1 */
        int candidate = j >= 2 * H && j < 3 * H;
        g[j] = (float)((candidate ? 2.0 : 1.0) * work[j] - (candidate ? 1.0 : 0.0));
    }
    for (int j = 0; j < H; j++) {
        c[j] = g[H + j] * c[j] + g[j] * g[2 * H + j];
        cs[j] = c[j];
        work[j] = 2.0 * (double)c[j];
    }
    squashes(work, pun, H);
    for (int j = 0; j < H; j++) {
        tcs[j] = (float)(2.0 * work[j] - 1.0);
        h[j] = g[3 * H + j] * tcs[j];
    }
}

#endif
