// The element-wise work of one recurrent step, shared by the training kernels (recurrences.cpp)
// and the generation loop (decoding.cpp). Equations and layouts: see recurrences.cpp.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>

namespace charlm {

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Runs row(b) for every batch row b. On one thread: at::parallel_for's OpenMP pragmas would need
// -fopenmp, which would load a second OpenMP runtime beside torch's own; the products, where most
// of the time goes, run on torch's threads anyway.
template <typename F>
inline void for_rows(int64_t batch, const F& row) {
  for (int64_t b = 0; b < batch; ++b) row(b);
}

// ---------------------------------------------------------------------------------------------
// The element-wise work of one step for one batch row of n hidden units. Separate functions with
// __restrict__ pointers so that the compiler vectorises them (exp and tanh included, with glibc's
// vector math under -ffast-math); T is the storage type, A = at::opmath_type<T> the arithmetic type.

template <typename T, typename A = at::opmath_type<T>>
inline void rnn_row(int64_t n, bool relu, const T* __restrict__ p, const T* __restrict__ bias,
                    T* __restrict__ h) {
  if (relu) {
    for (int64_t j = 0; j < n; ++j) {
      const A a = A(h[j]) + A(p[j]) + A(bias[j]);
      h[j] = a > A(0) ? a : A(0);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) h[j] = std::tanh(A(h[j]) + A(p[j]) + A(bias[j]));
  }
}

template <typename T, typename A = at::opmath_type<T>>
inline void rnn_row_backward(int64_t n, bool relu, const T* __restrict__ h, const T* __restrict__ dh,
                             T* __restrict__ da) {
  if (relu) {
    for (int64_t j = 0; j < n; ++j) da[j] = A(h[j]) > A(0) ? A(dh[j]) : A(0);
  } else {
    for (int64_t j = 0; j < n; ++j) da[j] = A(dh[j]) * (A(1) - A(h[j]) * A(h[j]));
  }
}

// Book GRU, first half: zr holds H_{t-1} [W_hz | W_hr] and becomes [Z | R]; rh = R * H_{t-1}.
template <typename T, typename A = at::opmath_type<T>>
inline void gru_gates_row(int64_t n, const T* __restrict__ p, const T* __restrict__ bias,
                          const T* __restrict__ h, T* __restrict__ zr, T* __restrict__ rh) {
  for (int64_t j = 0; j < 2 * n; ++j) zr[j] = sigmoid(A(zr[j]) + A(p[j]) + A(bias[j]));
  for (int64_t j = 0; j < n; ++j) rh[j] = A(zr[n + j]) * A(h[j]);
}

// Book GRU, second half: ht holds (R * H_{t-1}) W_hh and becomes H~; out = Z * H_{t-1} + (1 - Z) * H~.
template <typename T, typename A = at::opmath_type<T>>
inline void gru_state_row(int64_t n, const T* __restrict__ p_h, const T* __restrict__ b_h,
                          const T* __restrict__ z, const T* __restrict__ h, T* __restrict__ ht,
                          T* __restrict__ out) {
  for (int64_t j = 0; j < n; ++j) {
    const A candidate = std::tanh(A(ht[j]) + A(p_h[j]) + A(b_h[j]));
    ht[j] = candidate;
    out[j] = candidate + A(z[j]) * (A(h[j]) - candidate);
  }
}

// Book GRU backward, first half: dA^h and dA^z from dH_t.
template <typename T, typename A = at::opmath_type<T>>
inline void gru_row_backward_1(int64_t n, const T* __restrict__ dh, const T* __restrict__ z,
                               const T* __restrict__ ht, const T* __restrict__ hp, T* __restrict__ da) {
  for (int64_t j = 0; j < n; ++j) {
    const A g = dh[j], zj = z[j], c = ht[j];
    da[2 * n + j] = g * (A(1) - zj) * (A(1) - c * c);  // dA^h
    da[j] = g * (A(hp[j]) - c) * zj * (A(1) - zj);  // dA^z
  }
}

// Book GRU backward, second half: dA^r from d(R * H_{t-1}), and the part of dH_{t-1} that does
// not pass through the gates' product: through Z * H_{t-1}, through R * H_{t-1}, and the loss at t-1.
template <typename T, typename A = at::opmath_type<T>>
inline void gru_row_backward_2(int64_t n, const T* __restrict__ dh, const T* __restrict__ zr,
                               const T* __restrict__ hp, const T* __restrict__ drh,
                               const T* __restrict__ d_below, T* __restrict__ da, T* __restrict__ carry) {
  for (int64_t j = 0; j < n; ++j) {
    const A r = zr[n + j], d = drh[j];
    da[n + j] = d * A(hp[j]) * r * (A(1) - r);  // dA^r
    carry[j] = A(dh[j]) * A(zr[j]) + d * r + (d_below ? A(d_below[j]) : A(0));
  }
}

// torch's GRU: a = H_{t-1} [W_hz | W_hr | W_hh], then gates, candidate and new state.
template <typename T, typename A = at::opmath_type<T>>
inline void gru_reset_after_row(int64_t n, const T* __restrict__ p, const T* __restrict__ bias,
                                const T* __restrict__ a, const T* __restrict__ b_hh,
                                const T* __restrict__ h, T* __restrict__ zr, T* __restrict__ ah,
                                T* __restrict__ ht, T* __restrict__ out) {
  for (int64_t j = 0; j < 2 * n; ++j) zr[j] = sigmoid(A(p[j]) + A(bias[j]) + A(a[j]));
  for (int64_t j = 0; j < n; ++j) {
    const A hidden = A(a[2 * n + j]) + A(b_hh[j]);
    const A candidate = std::tanh(A(p[2 * n + j]) + A(bias[2 * n + j]) + A(zr[n + j]) * hidden);
    ah[j] = hidden;
    ht[j] = candidate;
    out[j] = candidate + A(zr[j]) * (A(h[j]) - candidate);
  }
}

template <typename T, typename A = at::opmath_type<T>>
inline void gru_reset_after_row_backward(int64_t n, const T* __restrict__ dh, const T* __restrict__ zr,
                                         const T* __restrict__ ht, const T* __restrict__ hp,
                                         const T* __restrict__ ah, const T* __restrict__ d_below,
                                         T* __restrict__ dp, T* __restrict__ da, T* __restrict__ carry) {
  for (int64_t j = 0; j < n; ++j) {
    const A g = dh[j], z = zr[j], r = zr[n + j], c = ht[j];
    const A dp_h = g * (A(1) - z) * (A(1) - c * c);
    const A dp_z = g * (A(hp[j]) - c) * z * (A(1) - z);
    const A dp_r = dp_h * A(ah[j]) * r * (A(1) - r);
    dp[j] = dp_z;
    dp[n + j] = dp_r;
    dp[2 * n + j] = dp_h;
    da[j] = dp_z;
    da[n + j] = dp_r;
    da[2 * n + j] = dp_h * r;
    carry[j] = g * z + (d_below ? A(d_below[j]) : A(0));
  }
}

// LSTM: g holds H_{t-1} W_h and becomes the activated gates [I | F | C~ | O].
template <typename T, typename A = at::opmath_type<T>>
inline void lstm_row(int64_t n, const T* __restrict__ p, const T* __restrict__ bias,
                     const T* __restrict__ c_prev, T* __restrict__ g, T* __restrict__ c, T* __restrict__ out) {
  for (int64_t j = 0; j < 2 * n; ++j) g[j] = sigmoid(A(g[j]) + A(p[j]) + A(bias[j]));  // I, F
  for (int64_t j = 2 * n; j < 3 * n; ++j) g[j] = std::tanh(A(g[j]) + A(p[j]) + A(bias[j]));  // C~
  for (int64_t j = 3 * n; j < 4 * n; ++j) g[j] = sigmoid(A(g[j]) + A(p[j]) + A(bias[j]));  // O
  for (int64_t j = 0; j < n; ++j) {
    const A cell = A(g[n + j]) * A(c_prev[j]) + A(g[j]) * A(g[2 * n + j]);
    c[j] = cell;
    out[j] = A(g[3 * n + j]) * std::tanh(cell);
  }
}

// LSTM backward: dc carries the gradient reaching C_t from later steps and leaves with C_{t-1}'s.
template <typename T, typename A = at::opmath_type<T>>
inline void lstm_row_backward(int64_t n, const T* __restrict__ dh, const T* __restrict__ g,
                              const T* __restrict__ c, const T* __restrict__ c_prev, T* __restrict__ dc,
                              T* __restrict__ da) {
  for (int64_t j = 0; j < n; ++j) {
    const A in = g[j], forget = g[n + j], candidate = g[2 * n + j], o = g[3 * n + j];
    const A tanh_c = std::tanh(A(c[j]));
    const A d_h = dh[j];
    const A d_c = A(dc[j]) + d_h * o * (A(1) - tanh_c * tanh_c);
    da[j] = d_c * candidate * in * (A(1) - in);
    da[n + j] = d_c * A(c_prev[j]) * forget * (A(1) - forget);
    da[2 * n + j] = d_c * in * (A(1) - candidate * candidate);
    da[3 * n + j] = d_h * tanh_c * o * (A(1) - o);
    dc[j] = d_c * forget;
  }
}

}  // namespace charlm
