/* The exact arithmetic of the compressor: exp, log and squash as plain IEEE operations in a fixed
 * order, so that the encoder and the decoder, on any machine and in any build, compute the same bits.
 * No libm transcendental function is used (exp and log are the polynomials below; floor, frexp and
 * sqrt are exact by definition), and the build turns contraction into fused multiply-adds off.
 *
 * Both networks (net.c, deepnet.c), the symbol experts and the bitwise stage compute with these.
 */
#ifndef CHARLM_EXACT_H
#define CHARLM_EXACT_H

#include <math.h>
#include <stdint.h>

/* e^r for |r| <= 0.35: Taylor to r^12, error below 1e-16 (deepnet.c's vectorised squash shares it). */
static inline double exp_taylor(double r) {
    double s = 1.0 / 479001600.0;
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
    return s;
}

static double cm_exp(double x) {  /* x <= 0 */
    if (x < -700.0) return 0.0;
    double k = floor(x * 1.4426950408889634 + 0.5);
    /* ln 2 split so that k * hi is exact for |k| < 2^11 */
    double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double s = exp_taylor(r);
    /* times 2^k, built from its bits: exact (k >= -1010 here, a normal number) and no libm call */
    union { uint64_t bits; double value; } scale = { (uint64_t)((int64_t)k + 1023) << 52 };
    return s * scale.value;
}

static double cm_log(double x) {  /* x > 0 */
    int e;
    double m;  /* x = m * 2^e, m in [0.5, 1): frexp's answer, read off the bits for a normal number */
    union { uint64_t bits; double value; } u = { .value = x };
    int field = (int)(u.bits >> 52) & 0x7FF;
    if (field > 0 && field < 0x7FF) {
        e = field - 1022;
        u.bits = (u.bits & 0x800FFFFFFFFFFFFFull) | 0x3FE0000000000000ull;
        m = u.value;
    } else {
        m = frexp(x, &e);  /* a subnormal number (or one no caller passes) */
    }
    if (m < 0.70710678118654752) { m *= 2.0; e -= 1; }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;  /* log m = 2 atanh s, |s| < 0.172 */
    double q = 1.0 / 19.0;
    for (int k = 17; k >= 1; k -= 2) q = q * s2 + 1.0 / k;
    return e * 0.69314718055994530942 + 2.0 * s * q;
}

static double squash(double x) {  /* 1 / (1 + e^-x) */
    return x >= 0 ? 1.0 / (1.0 + cm_exp(-x)) : cm_exp(x) / (1.0 + cm_exp(x));
}

/* ---- the same over arrays ----------------------------------------------------------------------
 * One cm_exp at a time is a chain of thirteen dependent multiply-adds, and a step takes hundreds
 * (two softmaxes over 256 symbols, the cell's 5H squashes), so these loops are written for the
 * compiler to vectorise: cm_exp without a branch (the same operations on every value, a select
 * where it branches), floor and 2^k's bits by adding 1.5 * 2^52 (GCC vectorises neither floor nor
 * a conversion to a 64-bit integer for AVX2), and 2^k read back through a union in a second loop. Each value
 * rounds exactly as cm_exp's and squash's (tested). */

typedef union { int64_t bits; double value; } Pun;  /* 2^k built from its bits */

/* x[i] = cm_exp(x[i]) for n values x[i] <= 0; `scale`: n Puns of scratch. */
static void exps(double *restrict x, Pun *restrict scale, int n) {
    const double round = 6755399441055744.0;  /* 1.5 * 2^52: y + round - round is y rounded */
    for (int i = 0; i < n; i++) {
        double a = x[i], xc = a < -700.0 ? -700.0 : a;
        double y = xc * 1.4426950408889634 + 0.5, t = (y + round) - round;  /* floor(y), as the */
        double k = t > y ? t - 1.0 : t;  /* nearest integer less one where that is above y */
        double r = (xc - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
        double s = exp_taylor(r);
        scale[i].value = k + round;  /* its bits: those of round, plus k */
        x[i] = a < -700.0 ? 0.0 : s;  /* the polynomial, times 2^k below */
    }
    for (int i = 0; i < n; i++) {
        Pun two_k = {.bits = (scale[i].bits - 0x4338000000000000LL + 1023) << 52};
        x[i] *= two_k.value;
    }
}

/* x[i] = squash(x[i]) = 1 / (1 + e^-x[i]) for n values; `scale`: 2n Puns of scratch. */
static void squashes(double *restrict x, Pun *restrict scale, int n) {
    double *restrict e = &scale[n].value;
    for (int i = 0; i < n; i++) e[i] = x[i] >= 0 ? -x[i] : x[i];  /* squash takes e^-|x| either way */
    exps(e, scale, n);
    for (int i = 0; i < n; i++) {
        double top = x[i] >= 0 ? 1.0 : e[i];  /* a select, not a branch */
        x[i] = top / (1.0 + e[i]);
    }
}

#endif
