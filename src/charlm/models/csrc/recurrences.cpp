// The book's recurrences as CPU kernels: the time loop and its backward pass in C++.
//
// Each step does its matrix products with ATen (MKL / oneDNN underneath) and everything else in one
// pass over the (batch, hidden) elements: the gate activations, the state update, and in the backward
// pass all the gate gradients of a step. In Python every one of those was a separate tensor
// operation with its own dispatch and its own trip through memory, which is where the GRU lost most
// of its time (docs/benchmarks.md).
//
// The equations, names and tensor layouts are those of charlm/models/fused.py, whose Python loops are
// the reference these kernels are tested against (tests/test_fused.py):
//   P      (T, B, G*H)  input projections X_t W_x + b of every step, gates side by side
//   H0, C0 (B, H)       initial state
//   W_*    (H, G*H)     hidden-to-hidden weights, gates side by side
// All tensors are on the CPU, contiguous, of one floating type (float, double or bfloat16; bfloat16
// products stay bfloat16 and the element-wise work is done in float).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include "cells.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace {

using at::Tensor;
using namespace charlm;

inline Tensor step(const Tensor& x, int64_t t) { return x.select(0, t); }

// MKL's packed GEMM, which torch's CPU build carries: the right-hand matrix of the per-step products
// is the same for all T steps, so it is packed into MKL's internal layout once per sequence instead
// of once per product. Declared weak: where the symbols are absent the products go through ATen.
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
}
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;  // MKL's

// C = A @ M, or C = bias + A @ M, for a fixed M = W or W^T (k, n) and a changing A (m, k) whose
// rows may be strided (a slice of a wider matrix). The backward pass multiplies by W^T: packing
// reads W transposed, so no transposed copy is made.
class StepProduct {
 public:
  // `uses`: how many products will be made; packing costs about one product, so a sequence of a
  // step or two (generation) is multiplied unpacked.
  StepProduct(const Tensor& W, int64_t m, int64_t uses, bool transposed = false) : m_(m) {
    const Tensor Wc = W.contiguous();
    k_ = transposed ? Wc.size(1) : Wc.size(0);
    n_ = transposed ? Wc.size(0) : Wc.size(1);
    const bool mkl = cblas_sgemm_pack_get_size && cblas_sgemm_pack && cblas_sgemm_compute;
    if (mkl && Wc.scalar_type() == at::kFloat && packing_enabled() && uses >= 4) {
      const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, m, n_, k_);
      packed_ = at::empty({static_cast<int64_t>(bytes / sizeof(float) + 1)}, Wc.options());
      cblas_sgemm_pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, m, n_, k_, 1.0f,
                       Wc.data_ptr<float>(), Wc.size(1), packed_.data_ptr<float>());
    } else {
      // ATen's products on a transposed view ran about 25 % slower than on a contiguous copy.
      W_ = transposed ? Wc.t().contiguous() : Wc;
    }
  }

  void operator()(const Tensor& A, Tensor& C) const {
    if (!packed_.defined()) {
      at::mm_out(C, A, W_);
      return;
    }
    compute(A, C, 0.0f);
  }

  void operator()(const Tensor& bias, const Tensor& A, Tensor& C) const {
    if (!packed_.defined()) {
      at::addmm_out(C, bias, A, W_);
      return;
    }
    C.copy_(bias);
    compute(A, C, 1.0f);
  }

  static bool& packing_enabled() {
    static bool enabled = true;
    return enabled;
  }

 private:
  void compute(const Tensor& A, Tensor& C, float beta) const {
    TORCH_CHECK(A.size(0) == m_ && A.stride(1) == 1 && C.is_contiguous(), "StepProduct: bad operands");
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, A.data_ptr<float>(), A.stride(0),
                        packed_.data_ptr<float>(), n_, beta, C.data_ptr<float>(), n_);
  }

  Tensor W_, packed_;
  int64_t m_, k_ = 0, n_ = 0;
};

// The batch cut into contiguous parts, one a thread, each stepped through all T steps with products
// of its own rows: `part(b0, rows)`. A step's products are small (32 x 256 by 256 x 1024 for the
// book's LSTM), and two threads sharing each of them wait on each other twice a step: on a 2-core
// Zen 3 (AVX2) the LSTM kernels gained 1.13x from a second thread that way, where torch's fused
// LSTM gains 1.84x. Parts that never meet scale like it. Parts have at least kMinRows rows.
constexpr int64_t kMinRows = 8;

template <typename F>
void over_batch_parts(int64_t B, const F& part) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / kMinRows));
  if (parts == 1 || at::in_parallel_region()) {
    part(0, B);
    return;
  }
  const at::ThreadLocalState caller;  // grad mode and kin are per thread: the parts run as the caller
  at::parallel_for(0, parts, 1, [&](int64_t lo, int64_t hi) {
    const at::ThreadLocalStateGuard as_caller(caller);
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t b0 = k * B / parts;
      part(b0, (k + 1) * B / parts - b0);
    }
  });
}

// (T, B, n) -> (T * B, n): one product over all steps.
inline Tensor flat(const Tensor& x) { return x.reshape({-1, x.size(-1)}); }

// H_{t-1} of every step: H0, then the outputs but the last.
inline Tensor previous(const Tensor& H0, const Tensor& outputs) {
  return at::cat({H0.unsqueeze(0), outputs.narrow(0, 0, outputs.size(0) - 1)});
}

// Where the input projections X_t W_x of step t come from: rows of P (T, B, G*H), or, for token
// ids (T, B), rows of W_x (vocabulary, G*H) itself, since one_hot(i) @ W_x is row i of W_x. The
// bias b (G*H) is added in the row functions, so (T, B, G*H) is never written in the forward pass.
struct Inputs {
  Inputs(const Tensor& source, const Tensor& ids, const Tensor& bias, const Tensor& H0, int64_t gates,
         const char* name)
      : source(source.contiguous()), ids(ids.contiguous()), bias(bias.contiguous()) {
    TORCH_CHECK(source.device().is_cpu() && H0.device().is_cpu(), name, ": CPU tensors expected");
    TORCH_CHECK(H0.dim() == 2, name, ": H0 must be (B, H), got ", H0.sizes());
    width = gates * H0.size(1);
    if (by_id()) {
      TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, name, ": ids must be (T, B) int64");
      TORCH_CHECK(source.dim() == 2 && source.size(1) == width, name, ": W_x ", source.sizes(),
                  " does not match H0 ", H0.sizes(), " for ", gates, " gate(s)");
      T = ids.size(0);
      B = ids.size(1);
      vocabulary = source.size(0);
    } else {
      TORCH_CHECK(source.dim() == 3 && source.size(2) == width, name, ": P ", source.sizes(),
                  " does not match H0 ", H0.sizes(), " for ", gates, " gate(s)");
      T = source.size(0);
      B = source.size(1);
    }
    TORCH_CHECK(T > 0, name, ": at least one time step expected");
    TORCH_CHECK(B == H0.size(0), name, ": batch of the inputs (", B, ") and of H0 ", H0.sizes(), " differ");
    TORCH_CHECK(bias.numel() == width, name, ": bias of ", bias.numel(), " elements, expected ", width);
    const int64_t* id = by_id() ? this->ids.data_ptr<int64_t>() : nullptr;
    for (int64_t i = 0; id && i < T * B; ++i) {
      TORCH_CHECK(id[i] >= 0 && id[i] < vocabulary, name, ": token id ", id[i], " outside [0, ", vocabulary,
                  ")");
    }
  }

  bool by_id() const { return ids.numel() > 0; }

  // Step t's projections: row b of the batch starts at row(base, id, b).
  template <typename T_>
  void rows(int64_t t, const T_** base, const int64_t** id) const {
    if (by_id()) {
      *base = source.data_ptr<T_>();
      *id = ids.data_ptr<int64_t>() + t * B;
    } else {
      *base = source.data_ptr<T_>() + t * B * width;
      *id = nullptr;
    }
  }

  template <typename T_>
  const T_* row(const T_* base, const int64_t* id, int64_t b) const {
    return base + (id ? id[b] : b) * width;
  }

  Tensor source, ids, bias;
  int64_t width = 0, T = 0, B = 0, vocabulary = 0;
};

template <typename T>
inline T* at_step(const Tensor& x, int64_t t) {  // the start of step t of a contiguous (T, B, k) tensor
  return x.data_ptr<T>() + t * x.size(1) * x.size(2);
}

// ---------------------------------------------------------------------------------------------
// RNN (eq. 8.4.5): H_t = phi(P_t + H_{t-1} W_hh), phi = tanh or relu.

Tensor rnn_forward(const Tensor& source, const Tensor& ids, const Tensor& bias_, const Tensor& H0_,
                   const Tensor& W, bool relu) {
  const Inputs in(source, ids, bias_, H0_, 1, "rnn_forward");
  const int64_t T = in.T, B = in.B, n = H0_.size(1);
  Tensor outputs = at::empty({T, B, n}, H0_.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, H0_.scalar_type(), "rnn_forward", [&] {
    Tensor H = H0_.contiguous();
    const scalar_t* bias = in.bias.data_ptr<scalar_t>();
    const StepProduct times_W(W, B, T);
    for (int64_t t = 0; t < T; ++t) {
      Tensor H_t = step(outputs, t);
      times_W(H, H_t);
      const scalar_t* p;
      const int64_t* id;
      in.rows(t, &p, &id);
      scalar_t* h = H_t.data_ptr<scalar_t>();
      for_rows(B, [&](int64_t b) { rnn_row(n, relu, in.row(p, id, b), bias, h + b * n); });
      H = H_t;
    }
  });
  return outputs;
}

// dA_t = (dH_t + dA_{t+1} W_hh^T) * phi'(A_t); with tanh phi' = 1 - H_t^2, with relu [H_t > 0].
std::tuple<Tensor, Tensor, Tensor> rnn_backward(const Tensor& d_outputs_, const Tensor& H0,
                                                const Tensor& W, const Tensor& outputs, bool relu) {
  const Tensor d_outputs = d_outputs_.contiguous();
  Tensor dA = at::empty_like(outputs);
  const int64_t T = outputs.size(0), B = outputs.size(1), n = outputs.size(2);
  Tensor dH = step(d_outputs, T - 1).clone();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, outputs.scalar_type(), "rnn_backward", [&] {
    const StepProduct times_W_T(W, B, T, /*transposed=*/true);
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* h = at_step<scalar_t>(outputs, t);
      const scalar_t* dh = dH.data_ptr<scalar_t>();
      scalar_t* da = at_step<scalar_t>(dA, t);
      for_rows(B, [&](int64_t b) { rnn_row_backward(n, relu, h + b * n, dh + b * n, da + b * n); });
      if (t > 0) {
        times_W_T(step(d_outputs, t - 1), step(dA, t), dH);
      } else {
        times_W_T(step(dA, 0), dH);
      }
    }
  });
  Tensor dW = at::mm(flat(previous(H0, outputs)).t(), flat(dA));  // all steps in one product
  return {dA, dH, dW};
}

// ---------------------------------------------------------------------------------------------
// The book's GRU (eq. 9.1.1-9.1.3), reset gate before the hidden product:
//   [Z_t | R_t] = sigmoid(P^zr_t + H_{t-1} [W_hz | W_hr])
//   H~_t        = tanh(P^h_t + (R_t * H_{t-1}) W_hh)
//   H_t         = Z_t * H_{t-1} + (1 - Z_t) * H~_t
// Returns outputs, ZR (the gates), H~ and R * H_{t-1}, all kept for the backward pass.

std::tuple<Tensor, Tensor, Tensor, Tensor> gru_forward(const Tensor& source, const Tensor& ids,
                                                       const Tensor& bias_, const Tensor& H0_,
                                                       const Tensor& W_zr, const Tensor& W_hh) {
  const Inputs in(source, ids, bias_, H0_, 3, "gru_forward");
  const int64_t T = in.T, B = in.B, n = H0_.size(1);
  Tensor outputs = at::empty({T, B, n}, H0_.options());
  Tensor ZR = at::empty({T, B, 2 * n}, H0_.options());
  Tensor H_tilde = at::empty({T, B, n}, H0_.options());
  Tensor RH = at::empty({T, B, n}, H0_.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, H0_.scalar_type(), "gru_forward", [&] {
    Tensor H = H0_.contiguous();
    const scalar_t* bias = in.bias.data_ptr<scalar_t>();
    const StepProduct times_W_zr(W_zr, B, T), times_W_hh(W_hh, B, T);
    for (int64_t t = 0; t < T; ++t) {
      Tensor zr_t = step(ZR, t), ht_t = step(H_tilde, t), rh_t = step(RH, t), out_t = step(outputs, t);
      times_W_zr(H, zr_t);
      const scalar_t* p;
      const int64_t* id;
      in.rows(t, &p, &id);
      const scalar_t* h = H.data_ptr<scalar_t>();
      scalar_t* zr = zr_t.data_ptr<scalar_t>();
      scalar_t* rh = rh_t.data_ptr<scalar_t>();
      for_rows(B, [&](int64_t b) {
        gru_gates_row(n, in.row(p, id, b), bias, h + b * n, zr + b * 2 * n, rh + b * n);
      });
      times_W_hh(rh_t, ht_t);
      scalar_t* ht = ht_t.data_ptr<scalar_t>();
      scalar_t* out = out_t.data_ptr<scalar_t>();
      for_rows(B, [&](int64_t b) {
        gru_state_row(n, in.row(p, id, b) + 2 * n, bias + 2 * n, zr + b * 2 * n, h + b * n, ht + b * n,
                      out + b * n);
      });
      H = out_t;
    }
  });
  return {outputs, ZR, H_tilde, RH};
}

// Backward of gru_forward; returns dP = [dA^z | dA^r | dA^h], dH0, dW_zr, dW_hh.
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_backward(const Tensor& d_outputs_, const Tensor& H0,
                                                        const Tensor& W_zr, const Tensor& W_hh,
                                                        const Tensor& outputs, const Tensor& ZR,
                                                        const Tensor& H_tilde, const Tensor& RH) {
  const Tensor d_outputs = d_outputs_.contiguous();
  const int64_t T = outputs.size(0), B = outputs.size(1), n = outputs.size(2);
  const Tensor H_prev = previous(H0, outputs);
  Tensor dA = at::empty({T, B, 3 * n}, outputs.options());
  Tensor dH = step(d_outputs, T - 1).clone();
  Tensor dRH = at::empty({B, n}, outputs.options());
  Tensor carried = at::empty({B, n}, outputs.options());  // dH_{t-1} but the product through W_zr
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, outputs.scalar_type(), "gru_backward", [&] {
    const StepProduct times_W_zr_T(W_zr, B, T, /*transposed=*/true), times_W_hh_T(W_hh, B, T, true);
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* hp = at_step<scalar_t>(H_prev, t);
      const scalar_t* zr = at_step<scalar_t>(ZR, t);
      const scalar_t* ht = at_step<scalar_t>(H_tilde, t);
      const scalar_t* dh = dH.data_ptr<scalar_t>();
      scalar_t* da = at_step<scalar_t>(dA, t);
      for_rows(B, [&](int64_t b) {
        gru_row_backward_1(n, dh + b * n, zr + b * 2 * n, ht + b * n, hp + b * n, da + b * 3 * n);
      });
      Tensor dA_t = step(dA, t);
      times_W_hh_T(dA_t.narrow(1, 2 * n, n), dRH);
      const scalar_t* drh = dRH.data_ptr<scalar_t>();
      const scalar_t* d_below = t > 0 ? at_step<scalar_t>(d_outputs, t - 1) : nullptr;
      scalar_t* carry = carried.data_ptr<scalar_t>();
      for_rows(B, [&](int64_t b) {
        gru_row_backward_2(n, dh + b * n, zr + b * 2 * n, hp + b * n, drh + b * n,
                           d_below ? d_below + b * n : nullptr, da + b * 3 * n, carry + b * n);
      });
      times_W_zr_T(carried, dA_t.narrow(1, 0, 2 * n), dH);  // ... and through both gates
    }
  });
  const Tensor dA_flat = flat(dA);
  Tensor dW_zr = at::mm(flat(H_prev).t(), dA_flat.narrow(1, 0, 2 * n));
  Tensor dW_hh = at::mm(flat(RH).t(), dA_flat.narrow(1, 2 * n, n));
  return {dA, dH, dW_zr, dW_hh};
}

// ---------------------------------------------------------------------------------------------
// torch's GRU, reset gate after the hidden product (one product a step for all three gates):
//   [A^z | A^r | A^h] = H_{t-1} [W_hz | W_hr | W_hh] + [0 | 0 | b_hh]
//   [Z_t | R_t] = sigmoid(P^zr_t + [A^z | A^r]),  H~_t = tanh(P^h_t + R_t * A^h)
//   H_t = Z_t * H_{t-1} + (1 - Z_t) * H~_t
// Returns outputs, ZR, H~ and A^h, kept for the backward pass.

std::tuple<Tensor, Tensor, Tensor, Tensor> gru_reset_after_forward(
    const Tensor& source, const Tensor& ids, const Tensor& bias_, const Tensor& H0_, const Tensor& W_h,
    const Tensor& b_hh_) {
  const Inputs in(source, ids, bias_, H0_, 3, "gru_reset_after_forward");
  const Tensor b_hh = b_hh_.contiguous();
  const int64_t T = in.T, B = in.B, n = H0_.size(1);
  TORCH_CHECK(b_hh.numel() == n, "gru_reset_after_forward: b_hh of ", b_hh.numel(), " elements, expected ",
              n);
  Tensor outputs = at::empty({T, B, n}, H0_.options());
  Tensor ZR = at::empty({T, B, 2 * n}, H0_.options());
  Tensor H_tilde = at::empty({T, B, n}, H0_.options());
  Tensor Ah = at::empty({T, B, n}, H0_.options());
  Tensor A = at::empty({B, 3 * n}, H0_.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, H0_.scalar_type(), "gru_reset_after_forward", [&] {
    Tensor H = H0_.contiguous();
    const scalar_t* bias = in.bias.data_ptr<scalar_t>();
    const scalar_t* hidden_bias = b_hh.data_ptr<scalar_t>();
    const StepProduct times_W_h(W_h, B, T);
    for (int64_t t = 0; t < T; ++t) {
      times_W_h(H, A);
      const scalar_t* a = A.data_ptr<scalar_t>();
      const scalar_t* p;
      const int64_t* id;
      in.rows(t, &p, &id);
      const scalar_t* h = H.data_ptr<scalar_t>();
      scalar_t* zr = at_step<scalar_t>(ZR, t);
      scalar_t* ht = at_step<scalar_t>(H_tilde, t);
      scalar_t* ah = at_step<scalar_t>(Ah, t);
      Tensor out_t = step(outputs, t);
      scalar_t* out = out_t.data_ptr<scalar_t>();
      for_rows(B, [&](int64_t b) {
        gru_reset_after_row(n, in.row(p, id, b), bias, a + b * 3 * n, hidden_bias, h + b * n,
                            zr + b * 2 * n, ah + b * n, ht + b * n, out + b * n);
      });
      H = out_t;
    }
  });
  return {outputs, ZR, H_tilde, Ah};
}

// Backward of gru_reset_after_forward; returns dP, dH0, dW_h, db_hh.
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_reset_after_backward(
    const Tensor& d_outputs_, const Tensor& H0, const Tensor& W_h, const Tensor& outputs,
    const Tensor& ZR, const Tensor& H_tilde, const Tensor& Ah) {
  const Tensor d_outputs = d_outputs_.contiguous();
  const int64_t T = outputs.size(0), B = outputs.size(1), n = outputs.size(2);
  const Tensor H_prev = previous(H0, outputs);
  Tensor dP = at::empty({T, B, 3 * n}, outputs.options());
  Tensor dA = at::empty({T, B, 3 * n}, outputs.options());  // gradient of the hidden product
  Tensor dH = step(d_outputs, T - 1).clone();
  Tensor carried = at::empty({B, n}, outputs.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, outputs.scalar_type(), "gru_reset_after_backward", [&] {
    const StepProduct times_W_h_T(W_h, B, T, /*transposed=*/true);
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* hp = at_step<scalar_t>(H_prev, t);
      const scalar_t* zr = at_step<scalar_t>(ZR, t);
      const scalar_t* ht = at_step<scalar_t>(H_tilde, t);
      const scalar_t* ah = at_step<scalar_t>(Ah, t);
      const scalar_t* dh = dH.data_ptr<scalar_t>();
      const scalar_t* d_below = t > 0 ? at_step<scalar_t>(d_outputs, t - 1) : nullptr;
      scalar_t* dp = at_step<scalar_t>(dP, t);
      scalar_t* da = at_step<scalar_t>(dA, t);
      scalar_t* carry = carried.data_ptr<scalar_t>();
      for_rows(B, [&](int64_t b) {
        gru_reset_after_row_backward(n, dh + b * n, zr + b * 2 * n, ht + b * n, hp + b * n, ah + b * n,
                                     d_below ? d_below + b * n : nullptr, dp + b * 3 * n, da + b * 3 * n,
                                     carry + b * n);
      });
      Tensor dA_t = step(dA, t);
      times_W_h_T(carried, dA_t, dH);
    }
  });
  Tensor dW_h = at::mm(flat(H_prev).t(), flat(dA));
  Tensor db_hh = flat(dA).narrow(1, 2 * n, n).sum(0);
  return {dP, dH, dW_h, db_hh};
}

// ---------------------------------------------------------------------------------------------
// LSTM (eq. 9.2.1-9.2.4), gates in torch's order (i, f, c, o):
//   [I | F | C~ | O] = [sigmoid | sigmoid | tanh | sigmoid](P_t + H_{t-1} W_h)
//   C_t = F * C_{t-1} + I * C~,  H_t = O * tanh(C_t)
// Returns outputs (the H_t), the memory cells C_t and the gates, kept for the backward pass.

std::tuple<Tensor, Tensor, Tensor> lstm_forward(const Tensor& source, const Tensor& ids, const Tensor& bias_,
                                                const Tensor& H0_, const Tensor& C0_, const Tensor& W_h) {
  const Inputs in(source, ids, bias_, H0_, 4, "lstm_forward");
  TORCH_CHECK(C0_.sizes() == H0_.sizes(), "lstm_forward: C0 ", C0_.sizes(), " must match H0 ",
              H0_.sizes());
  const int64_t T = in.T, B = in.B, n = H0_.size(1);
  Tensor outputs = at::empty({T, B, n}, H0_.options());
  Tensor cells = at::empty({T, B, n}, H0_.options());
  Tensor gates = at::empty({T, B, 4 * n}, H0_.options());
  const Tensor H0 = H0_.contiguous(), C0 = C0_.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, H0_.scalar_type(), "lstm_forward", [&] {
    const scalar_t* bias = in.bias.data_ptr<scalar_t>();
    over_batch_parts(B, [&](int64_t b0, int64_t rows) {
      Tensor H = H0.narrow(0, b0, rows), C = C0.narrow(0, b0, rows);
      const StepProduct times_W_h(W_h, rows, T);
      for (int64_t t = 0; t < T; ++t) {
        Tensor g_t = step(gates, t).narrow(0, b0, rows), c_t = step(cells, t).narrow(0, b0, rows);
        Tensor out_t = step(outputs, t).narrow(0, b0, rows);
        times_W_h(H, g_t);
        const scalar_t* p;
        const int64_t* id;
        in.rows(t, &p, &id);
        const scalar_t* c_prev = C.data_ptr<scalar_t>();
        scalar_t* g = g_t.data_ptr<scalar_t>();
        scalar_t* c = c_t.data_ptr<scalar_t>();
        scalar_t* out = out_t.data_ptr<scalar_t>();
        for_rows(rows, [&](int64_t b) {
          lstm_row(n, in.row(p, id, b0 + b), bias, c_prev + b * n, g + b * 4 * n, c + b * n, out + b * n);
        });
        H = out_t;
        C = c_t;
      }
    });
  });
  return {outputs, cells, gates};
}

// Backward of lstm_forward, given the gradients of the outputs and of the last cell C_T;
// returns dP, dH0, dC0, dW_h.
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_backward(const Tensor& d_outputs_, const Tensor& d_cell_,
                                                         const Tensor& H0, const Tensor& C0,
                                                         const Tensor& W_h, const Tensor& outputs,
                                                         const Tensor& cells, const Tensor& gates) {
  const Tensor d_outputs = d_outputs_.contiguous();
  const int64_t T = outputs.size(0), B = outputs.size(1), n = outputs.size(2);
  const Tensor H_prev = previous(H0, outputs);
  const Tensor C_prev = previous(C0, cells);
  Tensor dA = at::empty({T, B, 4 * n}, outputs.options());
  Tensor dH = step(d_outputs, T - 1).clone();
  Tensor dC = d_cell_.contiguous().clone();  // the gradient reaching C_t from later steps
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, outputs.scalar_type(), "lstm_backward", [&] {
    over_batch_parts(B, [&](int64_t b0, int64_t rows) {
      const StepProduct times_W_h_T(W_h, rows, T, /*transposed=*/true);
      Tensor dH_p = dH.narrow(0, b0, rows), dC_p = dC.narrow(0, b0, rows);
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* g = at_step<scalar_t>(gates, t) + b0 * 4 * n;
        const scalar_t* c = at_step<scalar_t>(cells, t) + b0 * n;
        const scalar_t* cp = at_step<scalar_t>(C_prev, t) + b0 * n;
        const scalar_t* dh = dH_p.data_ptr<scalar_t>();
        scalar_t* dc = dC_p.data_ptr<scalar_t>();
        scalar_t* da = at_step<scalar_t>(dA, t) + b0 * 4 * n;
        for_rows(rows, [&](int64_t b) {
          lstm_row_backward(n, dh + b * n, g + b * 4 * n, c + b * n, cp + b * n, dc + b * n, da + b * 4 * n);
        });
        const Tensor dA_t = step(dA, t).narrow(0, b0, rows);
        if (t > 0) {
          times_W_h_T(step(d_outputs, t - 1).narrow(0, b0, rows), dA_t, dH_p);
        } else {
          times_W_h_T(dA_t, dH_p);
        }
      }
    });
  });
  Tensor dW_h = at::mm(flat(H_prev).t(), flat(dA));
  return {dA, dH, dC, dW_h};
}

}  // namespace

// Switches MKL's packed products off and on (the benchmarks compare both); returns the old setting.
bool set_packed_products(bool enabled) {
  const bool previous = StepProduct::packing_enabled();
  StepProduct::packing_enabled() = enabled;
  return previous;
}

TORCH_LIBRARY(charlm, m) {
  m.def("set_packed_products", &set_packed_products);
  m.def("rnn_forward", &rnn_forward);
  m.def("rnn_backward", &rnn_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  m.def("gru_reset_after_forward", &gru_reset_after_forward);
  m.def("gru_reset_after_backward", &gru_reset_after_backward);
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
}
