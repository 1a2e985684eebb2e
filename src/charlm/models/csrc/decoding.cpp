// Greedy generation with the whole token loop in C++: the book's predict_ch8 (d2l §8.5.4) after its
// warm-up. Take the argmax of the logits, feed it back as the next input, repeat. In Python each
// token cost about 60 us of interpreter and dispatch work around a few microseconds of arithmetic;
// here a token costs its products and one pass over the elements of each layer.
//
// The model arrives as plain tensors, laid out as in the fast cells of charlm/models/scratch.py:
//   embedding  (V, E), or empty for one-hot inputs (then W_x of layer 0 is read by row: row i of
//              W_x is one_hot(i) @ W_x)
//   layers     four tensors per layer, W_x (inputs, G*H), b (G*H), then the cell's own:
//                rnn_tanh, rnn_relu: W_hh (H, H), unused    gru: W_zr (H, 2H), W_hh (H, H)
//                gru_reset_after:    W_h (H, 3H), b_hh (H)  lstm: W_h (H, 4H), unused
//   W_hq, b_q  (H, V), (V): the output layer
//   H, C       (L, N, H): the state after the prefix, C empty unless lstm; N independent streams
//   logits     (N, V): the logits of the prefix's last step

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cells.h"

namespace {

using at::Tensor;
using namespace charlm;

enum class Cell { kRnnTanh, kRnnRelu, kGru, kGruResetAfter, kLstm };

Cell parse_cell(const std::string& name) {
  if (name == "rnn_tanh") return Cell::kRnnTanh;
  if (name == "rnn_relu") return Cell::kRnnRelu;
  if (name == "gru") return Cell::kGru;
  if (name == "gru_reset_after") return Cell::kGruResetAfter;
  TORCH_CHECK(name == "lstm", "decode_greedy: unknown cell '", name, "'");
  return Cell::kLstm;
}

int64_t num_gates(Cell cell) {
  switch (cell) {
    case Cell::kGru:
    case Cell::kGruResetAfter:
      return 3;
    case Cell::kLstm:
      return 4;
    default:
      return 1;
  }
}

// y += x[k0:k1] @ W[k0:k1] for one row x and W (k, n) with rows `stride` apart: each block of
// columns is summed in registers over all rows (8 AVX-512 registers of floats), so only W is
// streamed through the caches; the loop is bound by how fast the core reads W from its L2 cache.
template <typename T, int64_t kBlock>
inline void add_rows_block(int64_t k0, int64_t k1, int64_t stride, const T* __restrict__ x,
                           const T* __restrict__ W, T* __restrict__ y) {
  T acc[kBlock];
  for (int64_t j = 0; j < kBlock; ++j) acc[j] = y[j];
  for (int64_t i = k0; i < k1; ++i) {
    const T a = x[i];
    const T* __restrict__ w = W + i * stride;
    for (int64_t j = 0; j < kBlock; ++j) acc[j] += a * w[j];
  }
  for (int64_t j = 0; j < kBlock; ++j) y[j] = acc[j];
}

// The same for the columns left over (or a narrow output layer): one multiply-add per row of W.
template <typename T>
inline void add_rows_axpy(int64_t k0, int64_t k1, int64_t stride, int64_t width, const T* __restrict__ x,
                          const T* __restrict__ W, T* __restrict__ y) {
  for (int64_t i = k0; i < k1; ++i) {
    const T a = x[i];
    const T* __restrict__ w = W + i * stride;
    for (int64_t j = 0; j < width; ++j) y[j] += a * w[j];
  }
}

template <typename T>
void add_rows(int64_t k0, int64_t k1, int64_t n, const T* x, const T* W, T* y) {
  constexpr int64_t kBlock = 512 / sizeof(T);  // 8 registers of 64 bytes
  int64_t j0 = 0;
  for (; j0 + kBlock <= n; j0 += kBlock) add_rows_block<T, kBlock>(k0, k1, n, x, W + j0, y + j0);
  if (j0 < n) add_rows_axpy(k0, k1, n, n - j0, x, W + j0, y + j0);
}

// Above this size a one-row product splits the rows of W between torch's threads: each core then
// reads its part of W from its own L2 cache (a (1, 512) @ (512, 512) product: 7 us on one core,
// 4.6 us on two), and the partial sums are added at the end.
constexpr int64_t kThreadedBytes = 256 * 1024;
// Up to this size one stream multiplies with the loops above; they beat MKL, which costs about
// 4 us of set-up per call where W fits the L2 caches, and reads a W from the L3 cache at half their
// speed: a 2 x 512 LSTM (three 4 MB products a step) decodes greedily at 5,300 chars/s against
// 2,900 through MKL (2-core AMD EPYC). Beyond the last-level cache both wait on memory alike.
constexpr int64_t kOneRowMaxBytes = 64 * 1024 * 1024;

// y (n) = x (k) @ W (k, n) + bias (n), bias may be null.
template <typename T>
void row_product(int64_t k, int64_t n, const T* x, const T* W, const T* bias, T* y) {
  const int64_t bytes = k * n * static_cast<int64_t>(sizeof(T));
  const int64_t parts = bytes >= kThreadedBytes ? std::min<int64_t>(at::get_num_threads(), k / 64) : 1;
  if (parts <= 1) {
    if (bias) {
      std::copy_n(bias, n, y);
    } else {
      std::fill_n(y, n, T(0));
    }
    add_rows(0, k, n, x, W, y);
    return;
  }
  std::vector<T> partial(parts * n, T(0));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) add_rows(p * k / parts, (p + 1) * k / parts, n, x, W, &partial[p * n]);
  });
  for (int64_t j = 0; j < n; ++j) {
    T sum = bias ? bias[j] : T(0);
    for (int64_t p = 0; p < parts; ++p) sum += partial[p * n + j];
    y[j] = sum;
  }
}

// y = x @ W (+ bias), y contiguous: one stream through row_product while W fits the L2 caches;
// several streams, bfloat16 or a larger W through ATen (MKL).
template <typename T>
void product(const Tensor& x, const Tensor& W, Tensor& y, const Tensor* bias = nullptr) {
  const bool fits = W.numel() * static_cast<int64_t>(sizeof(T)) <= kOneRowMaxBytes;
  if (x.size(0) == 1 && fits && !std::is_same_v<T, at::BFloat16>) {
    row_product(W.size(0), W.size(1), x.data_ptr<T>(), W.data_ptr<T>(), bias ? bias->data_ptr<T>() : nullptr,
                y.data_ptr<T>());
  } else if (bias) {
    at::addmm_out(y, *bias, x, W);
  } else {
    at::mm_out(y, x, W);
  }
}

// The first index of the largest value of each row of logits (N, V), as torch.argmax.
template <typename T>
void argmax_rows(const Tensor& logits, int64_t* ids) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const T* row = logits.data_ptr<T>();
  for (int64_t b = 0; b < N; ++b, row += V) {
    int64_t best = 0;
    for (int64_t j = 1; j < V; ++j) {
      if (row[j] > row[best]) best = j;
    }
    ids[b] = best;
  }
}

struct Layer {
  Tensor W_x, b, W_a, W_b;
};

// One forward step of the whole model for N streams at a time; buffers are made once.
template <typename T>
class Stepper {
 public:
  Stepper(Cell cell, const Tensor& embedding, std::vector<Layer> layers, const Tensor& W_hq, const Tensor& b_q,
          Tensor H, Tensor C)
      : cell_(cell), embedding_(embedding), layers_(std::move(layers)), W_hq_(W_hq), b_q_(b_q) {
    const int64_t N = H.size(1), n = H.size(2), G = num_gates(cell);
    for (int64_t l = 0; l < H.size(0); ++l) {  // views of each layer's state, made once
      H_.push_back(H[l]);
      C_.push_back(C.defined() ? C[l] : Tensor());
    }
    const auto options = H.options();
    if (embedding_.defined()) x_ = at::empty({N, embedding_.size(1)}, options);
    P_ = at::empty({N, G * n}, options);
    A_ = at::empty({N, G * n}, options);  // the hidden products
    R_ = at::empty({N, 2 * n}, options);  // GRU: [Z | R]
    RH_ = at::empty({N, n}, options);  // GRU: R * H, or the hidden candidate product
    tilde_ = at::empty({N, n}, options);  // GRU: H~; LSTM: the new C
    out_ = at::empty({N, n}, options);  // the new H of a layer
    logits_ = at::empty({N, W_hq.size(1)}, options);
  }

  // Feeds ids (N) into the model: the state moves one step and, if `output`, logits() holds the
  // next predictions (a warm-up step before the last needs no logits).
  void step(const int64_t* ids, bool output = true) {
    const int64_t N = H_[0].size(0), width = num_gates(cell_) * H_[0].size(1);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      // Row b of the input projections X_t W_x: a row of W_x itself for one-hot inputs.
      const T* p = P_.data_ptr<T>();
      const int64_t* rows = nullptr;
      if (l > 0) {
        product<T>(H_[l - 1], layer.W_x, P_);
      } else if (embedding_.defined()) {
        at::index_select_out(x_, embedding_, 0, at::from_blob(const_cast<int64_t*>(ids), {N}, at::kLong));
        product<T>(x_, layer.W_x, P_);
      } else {
        p = layer.W_x.data_ptr<T>();
        rows = ids;
      }
      auto P_row = [&](int64_t b) { return p + (rows ? rows[b] : b) * width; };
      layer_step(layer, H_[l], C_[l], P_row);
    }
    if (output) product<T>(H_.back(), W_hq_, logits_, &b_q_);
  }

  const Tensor& logits() const { return logits_; }

 private:
  template <typename Rows>
  void layer_step(const Layer& layer, const Tensor& H, const Tensor& C, const Rows& P_row) {
    const int64_t N = H.size(0), n = H.size(1);
    const T* bias = layer.b.data_ptr<T>();
    T* h = H.data_ptr<T>();
    T* out = out_.data_ptr<T>();
    T* a = A_.data_ptr<T>();
    switch (cell_) {
      case Cell::kRnnTanh:
      case Cell::kRnnRelu: {
        product<T>(H, layer.W_a, out_);  // H_{t-1} W_hh, then phi(P + . + b) in place
        const bool relu = cell_ == Cell::kRnnRelu;
        for_rows(N, [&](int64_t b) { rnn_row(n, relu, P_row(b), bias, out + b * n); });
        break;
      }
      case Cell::kGru: {
        product<T>(H, layer.W_a, R_);
        T* zr = R_.data_ptr<T>();
        T* rh = RH_.data_ptr<T>();
        T* ht = tilde_.data_ptr<T>();
        for_rows(N, [&](int64_t b) { gru_gates_row(n, P_row(b), bias, h + b * n, zr + b * 2 * n, rh + b * n); });
        product<T>(RH_, layer.W_b, tilde_);
        for_rows(N, [&](int64_t b) {
          gru_state_row(n, P_row(b) + 2 * n, bias + 2 * n, zr + b * 2 * n, h + b * n, ht + b * n, out + b * n);
        });
        break;
      }
      case Cell::kGruResetAfter: {
        product<T>(H, layer.W_a, A_);
        const T* b_hh = layer.W_b.data_ptr<T>();
        T* zr = R_.data_ptr<T>();
        T* ah = RH_.data_ptr<T>();
        T* ht = tilde_.data_ptr<T>();
        for_rows(N, [&](int64_t b) {
          gru_reset_after_row(n, P_row(b), bias, a + b * 3 * n, b_hh, h + b * n, zr + b * 2 * n, ah + b * n,
                              ht + b * n, out + b * n);
        });
        break;
      }
      case Cell::kLstm: {
        product<T>(H, layer.W_a, A_);
        const T* c = C.data_ptr<T>();
        T* c_new = tilde_.data_ptr<T>();
        for_rows(N, [&](int64_t b) {
          lstm_row(n, P_row(b), bias, c + b * n, a + b * 4 * n, c_new + b * n, out + b * n);
        });
        std::copy_n(c_new, N * n, C.data_ptr<T>());
        break;
      }
    }
    std::copy_n(out, N * n, h);
  }

  Cell cell_;
  Tensor embedding_;
  std::vector<Layer> layers_;
  Tensor W_hq_, b_q_;
  std::vector<Tensor> H_, C_;  // each layer's state (N, H), updated in place
  Tensor x_, P_, A_, R_, RH_, tilde_, out_, logits_;
};

std::vector<Layer> check_layers(Cell cell, at::TensorList tensors, const Tensor& H, const Tensor& embedding,
                                int64_t vocab_size) {
  const int64_t L = H.size(0), n = H.size(2), width = num_gates(cell) * n;
  TORCH_CHECK(static_cast<int64_t>(tensors.size()) == 4 * L, "decode_greedy: ", tensors.size(),
              " layer tensors for a state of ", L, " layer(s); expected 4 per layer");
  std::vector<Layer> layers;
  for (int64_t l = 0; l < L; ++l) {
    Layer layer{tensors[4 * l].contiguous(), tensors[4 * l + 1].contiguous(), tensors[4 * l + 2].contiguous(),
                tensors[4 * l + 3].contiguous()};
    const int64_t inputs = l > 0 ? n : (embedding.defined() ? embedding.size(1) : vocab_size);
    TORCH_CHECK(layer.W_x.dim() == 2 && layer.W_x.size(0) == inputs && layer.W_x.size(1) == width,
                "decode_greedy: W_x of layer ", l, " is ", layer.W_x.sizes(), ", expected (", inputs, ", ",
                width, ")");
    TORCH_CHECK(layer.b.numel() == width, "decode_greedy: bias of layer ", l, " has ", layer.b.numel(),
                " elements, expected ", width);
    const int64_t hidden_width = cell == Cell::kGru ? 2 * n : width;
    TORCH_CHECK(layer.W_a.dim() == 2 && layer.W_a.size(0) == n && layer.W_a.size(1) == hidden_width,
                "decode_greedy: hidden weights of layer ", l, " are ", layer.W_a.sizes());
    if (cell == Cell::kGru) {
      TORCH_CHECK(layer.W_b.dim() == 2 && layer.W_b.size(0) == n && layer.W_b.size(1) == n,
                  "decode_greedy: W_hh of layer ", l, " is ", layer.W_b.sizes());
    } else if (cell == Cell::kGruResetAfter) {
      TORCH_CHECK(layer.W_b.numel() == n, "decode_greedy: b_hh of layer ", l, " has ", layer.W_b.numel(),
                  " elements");
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

void check_same_kind(const Tensor& H0, std::initializer_list<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    TORCH_CHECK(t.numel() == 0 || (t.device().is_cpu() && t.scalar_type() == H0.scalar_type()),
                "decode_greedy: every tensor must be on the CPU with H's dtype ", H0.scalar_type());
  }
}

// Where the loop starts: the logits (N, V) of a step already run, or a prefix of ids (T, N) to run
// first (the book's warm-up), whose logits are computed for its last step only.
void check_start(const Tensor& prefix, const Tensor& logits, int64_t N, int64_t V) {
  if (prefix.numel() == 0) {
    TORCH_CHECK(logits.dim() == 2 && logits.size(0) == N && logits.size(1) == V, "decode_greedy: logits ",
                logits.sizes(), " expected (", N, ", ", V, ")");
    return;
  }
  TORCH_CHECK(logits.numel() == 0, "decode_greedy: give either a prefix or the logits to start from");
  TORCH_CHECK(prefix.dim() == 2 && prefix.size(1) == N && prefix.scalar_type() == at::kLong,
              "decode_greedy: the prefix must be (T, ", N, ") int64, got ", prefix.sizes());
  const Tensor ids = prefix.contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < V, "decode_greedy: token id ", id[i], " outside [0, ", V, ")");
  }
}

// Picks `count` tokens greedily for each of the N streams, after warming up on `prefix` or from
// `logits`. Returns the ids (count, N), and the logits and state H, C after them. With
// feed_last = false the last pick is not fed back (nothing will read the step it would compute):
// the logits and state returned are then those after the first count - 1 picks. A `step_logits`
// of shape (count, N, V) receives the logits each pick was made from (the explorer shows their
// probabilities); an empty one is left alone.
std::tuple<Tensor, Tensor, Tensor, Tensor> decode_greedy(const Tensor& prefix, const Tensor& logits,
                                                         const Tensor& H0, const Tensor& C0,
                                                         const std::string& cell_name, const Tensor& embedding_,
                                                         at::TensorList layer_tensors, const Tensor& W_hq_,
                                                         const Tensor& b_q_, int64_t count, bool feed_last,
                                                         const Tensor& step_logits) {
  const Cell cell = parse_cell(cell_name);
  TORCH_CHECK(H0.dim() == 3 && H0.device().is_cpu(), "decode_greedy: H must be (L, N, H) on the CPU");
  TORCH_CHECK(count >= 0, "decode_greedy: count must be >= 0");
  TORCH_CHECK((cell == Cell::kLstm) == (C0.numel() > 0), "decode_greedy: C is needed for, and only for, lstm");
  TORCH_CHECK(C0.numel() == 0 || C0.sizes() == H0.sizes(), "decode_greedy: C ", C0.sizes(), " must match H ",
              H0.sizes());
  const int64_t N = H0.size(1), V = W_hq_.size(1);
  TORCH_CHECK(W_hq_.dim() == 2 && W_hq_.size(0) == H0.size(2) && b_q_.numel() == V,
              "decode_greedy: the output layer ", W_hq_.sizes(), " does not match H ", H0.sizes());
  check_start(prefix, logits, N, V);
  const Tensor embedding = embedding_.numel() > 0 ? embedding_.contiguous() : Tensor();
  TORCH_CHECK(!embedding.defined() || (embedding.dim() == 2 && embedding.size(0) == V),
              "decode_greedy: embedding ", embedding_.sizes(), " does not have ", V, " rows");
  std::vector<Layer> layers = check_layers(cell, layer_tensors, H0, embedding, V);
  check_same_kind(H0, {logits, C0, embedding_, W_hq_, b_q_, step_logits});
  const bool record = step_logits.numel() > 0;
  TORCH_CHECK(!record || (step_logits.dim() == 3 && step_logits.size(0) == count && step_logits.size(1) == N &&
                          step_logits.size(2) == V && step_logits.is_contiguous()),
              "decode_greedy: step_logits ", step_logits.sizes(), " must be contiguous (", count, ", ", N, ", ",
              V, ")");
  for (const Layer& layer : layers) check_same_kind(H0, {layer.W_x, layer.b, layer.W_a, layer.W_b});

  Tensor ids = at::empty({count, N}, H0.options().dtype(at::kLong));
  Tensor H = H0.contiguous().clone(), C = C0.numel() > 0 ? C0.contiguous().clone() : Tensor();
  Tensor last_logits = logits.numel() > 0 ? logits.contiguous().clone() : at::empty({N, V}, H0.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, H.scalar_type(), "decode_greedy", [&] {
    Stepper<scalar_t> model(cell, embedding, std::move(layers), W_hq_.contiguous(), b_q_.contiguous(), H, C);
    const Tensor warm_up = prefix.contiguous();
    const Tensor* current = &last_logits;
    for (int64_t t = 0; t < warm_up.size(0) && prefix.numel() > 0; ++t) {
      const bool last = t + 1 == warm_up.size(0);
      model.step(warm_up.data_ptr<int64_t>() + t * N, /*output=*/last);
      if (last) current = &model.logits();
    }
    for (int64_t i = 0; i < count; ++i) {
      int64_t* chosen = ids.data_ptr<int64_t>() + i * N;
      argmax_rows<scalar_t>(*current, chosen);
      if (record) step_logits.select(0, i).copy_(*current);
      if (i + 1 < count || feed_last) {
        model.step(chosen);
        current = &model.logits();
      }
    }
    if (current != &last_logits) last_logits.copy_(*current);
  });
  return {ids, last_logits, H, C.defined() ? C : at::empty({0}, H.options())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(charlm, m) { m.def("decode_greedy", &decode_greedy); }
