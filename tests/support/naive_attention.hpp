// SPDX-License-Identifier: MIT
// The naive reference of attention (spec §3) with materialised relative tables: aK and aV are
// gathered per (query, key) pair into (len × len × d_head) tensors, score biases and the
// Transformer-XL terms are fetched per pair, and every score and output is a plain loop. It exists
// to check the skewing path in tests and to be the baseline series of the benchmarks; its memory is
// O(len²·d_head) by design. Never use it for real work.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <relpos/attention.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos::test {

/// Attention of one sequence x (len, d_model) by the naive loops, with mha's weights and
/// encoding. Same contract as MultiHeadAttention::forward.
template <Scalar T, class Enc>
Matrix<T> naive_attention(const MultiHeadAttention<T, Enc>& mha, ConstMatrixRef<T> x,
                          const SequenceInputs& in) {
  const Index len = x.rows(), d = mha.d_model(), n_heads = mha.n_heads(), dh = mha.d_head();
  const Positions& p = in.positions;

  Matrix<T> qkv = x * mha.in_proj_weight.transpose();  // (len, 3 d_model)
  qkv.rowwise() += mha.in_proj_bias.transpose();
  Matrix<T> q = qkv.leftCols(d), k = qkv.middleCols(d, d), v = qkv.rightCols(d);
  if constexpr (TransformsQK<Enc>) mha.encoding.transform_qk(q, k, p, n_heads);

  // the materialised relative tables, [i][j] -> aK(c_ij) / aV(c_ij): (len, len, d_head)
  const bool keys = relpos::detail::key_term_active(mha.encoding),
             values = relpos::detail::value_term_active(mha.encoding);
  Eigen::Tensor<T, 3, Eigen::RowMajor> a_k(keys ? len : 0, len, dh);
  Eigen::Tensor<T, 3, Eigen::RowMajor> a_v(values ? len : 0, len, dh);
  for (Index i = 0; i < len; ++i) {
    for (Index j = 0; j < len; ++j) {
      if constexpr (HasKeyTerm<Enc> || HasValueTerm<Enc>) {
        const std::int64_t c = mha.encoding.clamp_distance(p[j] - p[i]);
        if constexpr (HasKeyTerm<Enc>) {
          if (keys) {
            const DistanceRows<T> rows = mha.encoding.key_rows(c, c);
            const ConstMatrixMap<T> row = rows.view();
            for (Index t = 0; t < dh; ++t) a_k(i, j, t) = row(0, t);
          }
        }
        if constexpr (HasValueTerm<Enc>) {
          if (values) {
            const DistanceRows<T> rows = mha.encoding.value_rows(c, c);
            const ConstMatrixMap<T> row = rows.view();
            for (Index t = 0; t < dh; ++t) a_v(i, j, t) = row(0, t);
          }
        }
      }
    }
  }

  const T scale = score_scale(mha.encoding, dh);
  Matrix<T> z = Matrix<T>::Zero(len, d);
  std::vector<T> e(static_cast<std::size_t>(len));
  for (Index h = 0; h < n_heads; ++h) {
    const Index o = h * dh;
    for (Index i = 0; i < len; ++i) {
      T max = -std::numeric_limits<T>::infinity();
      for (Index j = 0; j < len; ++j) {
        const bool hidden =
            (mha.config.causal && j > i) || (in.key_padding != nullptr && in.key_padding[j]);
        T s = 0;
        for (Index t = 0; t < dh; ++t) {
          s += q(i, o + t) * (k(j, o + t) + (keys ? a_k(i, j, t) : T(0)));
        }
        if constexpr (HasHeadKeyTerm<Enc> || HasHeadQueryTerm<Enc>) {
          const std::int64_t c = mha.encoding.clamp_distance(p[j] - p[i]);
          if constexpr (HasXlBiases<Enc>) {
            // Transformer-XL: u_h · k_j + (q_i + v_h) · r_h(c_ij), before the scale
            const DistanceRows<T> rows = mha.encoding.head_key_rows(c, c);
            const ConstMatrixMap<T> r = rows.view();
            for (Index t = 0; t < dh; ++t) {
              s += mha.encoding.content_bias()(h, t) * k(j, o + t) +
                   (q(i, o + t) + mha.encoding.position_bias()(h, t)) * r(0, o + t);
            }
          } else if constexpr (HasHeadKeyTerm<Enc>) {
            // q_i · r_h(c_ij) (DeBERTa's c2p), when on
            if (mha.encoding.uses_head_keys()) {
              const DistanceRows<T> rows = mha.encoding.head_key_rows(c, c);
              const ConstMatrixMap<T> r = rows.view();
              for (Index t = 0; t < dh; ++t) s += q(i, o + t) * r(0, o + t);
            }
          }
          if constexpr (HasHeadQueryTerm<Enc>) {
            // k_j · s_h(c_ij) (DeBERTa's p2c), when on
            if (mha.encoding.uses_head_queries()) {
              const DistanceRows<T> rows = mha.encoding.head_query_rows(c, c);
              const ConstMatrixMap<T> r = rows.view();
              for (Index t = 0; t < dh; ++t) s += k(j, o + t) * r(0, o + t);
            }
          }
        }
        s *= scale;
        if constexpr (HasScoreBias<Enc>) {
          // b_h(c_ij), after the scale (t5, alibi)
          T b{};
          const std::int64_t c = mha.encoding.clamp_distance(p[j] - p[i]);
          mha.encoding.score_bias(h, c, c, &b);
          s += b;
        }
        e[j] = hidden ? -std::numeric_limits<T>::infinity() : s;
        max = std::max(max, e[j]);
      }
      if (max == -std::numeric_limits<T>::infinity()) continue;  // no visible key: z_i = 0
      T sum = 0;
      for (Index j = 0; j < len; ++j) sum += (e[j] = std::exp(e[j] - max));
      for (Index j = 0; j < len; ++j) {
        const T alpha = e[j] / sum;
        for (Index t = 0; t < dh; ++t) {
          z(i, o + t) += alpha * (v(j, o + t) + (values ? a_v(i, j, t) : T(0)));
        }
      }
    }
  }
  Matrix<T> out = z * mha.out_proj_weight.transpose();
  out.rowwise() += mha.out_proj_bias.transpose();
  return out;
}

/// Rows `rows` of the attention output of one sequence x (len, d_model), each by plain loops
/// over every key: the relative terms of each (query, key) pair are fetched from the encoding
/// as the pair is scored, so memory is O(len·d) and time O(len·d) per row beyond the
/// projections. It checks long inputs on sampled rows, where (len × len) would not fit.
/// Returns (rows.size(), d_model), after out_proj.
template <Scalar T, class Enc>
Matrix<T> naive_attention_rows(const MultiHeadAttention<T, Enc>& mha, ConstMatrixRef<T> x,
                               const SequenceInputs& in, std::span<const Index> rows) {
  const Index len = x.rows(), d = mha.d_model(), n_heads = mha.n_heads(), dh = mha.d_head();
  const Positions& p = in.positions;
  Matrix<T> qkv = x * mha.in_proj_weight.transpose();  // (len, 3 d_model)
  qkv.rowwise() += mha.in_proj_bias.transpose();
  Matrix<T> q = qkv.leftCols(d), k = qkv.middleCols(d, d), v = qkv.rightCols(d);
  if constexpr (TransformsQK<Enc>) mha.encoding.transform_qk(q, k, p, n_heads);
  const bool keys = relpos::detail::key_term_active(mha.encoding),
             values = relpos::detail::value_term_active(mha.encoding);
  const T scale = score_scale(mha.encoding, dh);
  // one row of a DistanceRows result: (1, width)
  const auto row_of = [](const DistanceRows<T>& r, Index t) { return r.view()(0, t); };
  // c_ij: the clamped distance p_j − p_i, for encodings with relative terms
  const auto distance = [&](Index i, Index j) -> std::int64_t {
    if constexpr (requires { mha.encoding.clamp_distance(std::int64_t{}); })
      return mha.encoding.clamp_distance(p[j] - p[i]);
    else
      return p[j] - p[i];
  };

  Matrix<T> z = Matrix<T>::Zero(static_cast<Index>(rows.size()), d);
  std::vector<T> e(static_cast<std::size_t>(len));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Index i = rows[r];
    for (Index h = 0; h < n_heads; ++h) {
      const Index o = h * dh;
      T max = -std::numeric_limits<T>::infinity();
      for (Index j = 0; j < len; ++j) {
        const bool hidden =
            (mha.config.causal && j > i) || (in.key_padding != nullptr && in.key_padding[j]);
        const std::int64_t c = distance(i, j);
        T s = 0;
        for (Index t = 0; t < dh; ++t) s += q(i, o + t) * k(j, o + t);
        if constexpr (HasKeyTerm<Enc>) {
          if (keys) {  // q_i · aK(c_ij) (Shaw et al.)
            const DistanceRows<T> a = mha.encoding.key_rows(c, c);
            for (Index t = 0; t < dh; ++t) s += q(i, o + t) * row_of(a, t);
          }
        }
        if constexpr (HasXlBiases<Enc>) {
          // Transformer-XL: u_h · k_j + (q_i + v_h) · r_h(c_ij)
          const DistanceRows<T> a = mha.encoding.head_key_rows(c, c);
          for (Index t = 0; t < dh; ++t) {
            s += mha.encoding.content_bias()(h, t) * k(j, o + t) +
                 (q(i, o + t) + mha.encoding.position_bias()(h, t)) * row_of(a, o + t);
          }
        } else if constexpr (HasHeadKeyTerm<Enc>) {
          if (mha.encoding.uses_head_keys()) {  // DeBERTa's c2p: q_i · r_h(c_ij)
            const DistanceRows<T> a = mha.encoding.head_key_rows(c, c);
            for (Index t = 0; t < dh; ++t) s += q(i, o + t) * row_of(a, o + t);
          }
        }
        if constexpr (HasHeadQueryTerm<Enc>) {
          if (mha.encoding.uses_head_queries()) {  // DeBERTa's p2c: k_j · s_h(c_ij)
            const DistanceRows<T> a = mha.encoding.head_query_rows(c, c);
            for (Index t = 0; t < dh; ++t) s += k(j, o + t) * row_of(a, o + t);
          }
        }
        s *= scale;
        if constexpr (HasScoreBias<Enc>) {  // b_h(c_ij), after the scale (t5, alibi, kerple)
          T b{};
          mha.encoding.score_bias(h, c, c, &b);
          s += b;
        }
        e[static_cast<std::size_t>(j)] = hidden ? -std::numeric_limits<T>::infinity() : s;
        max = std::max(max, e[static_cast<std::size_t>(j)]);
      }
      if (max == -std::numeric_limits<T>::infinity()) continue;  // no visible key: z_i = 0
      T sum = 0;
      for (T& ej : e) sum += (ej = std::exp(ej - max));
      for (Index j = 0; j < len; ++j) {
        const T alpha = e[static_cast<std::size_t>(j)] / sum;
        for (Index t = 0; t < dh; ++t) z(static_cast<Index>(r), o + t) += alpha * v(j, o + t);
        if constexpr (HasValueTerm<Enc>) {
          if (values) {  // α_ij · aV(c_ij)
            const std::int64_t c = distance(i, j);
            const DistanceRows<T> a = mha.encoding.value_rows(c, c);
            for (Index t = 0; t < dh; ++t) z(static_cast<Index>(r), o + t) += alpha * row_of(a, t);
          }
        }
      }
    }
  }
  Matrix<T> out = z * mha.out_proj_weight.transpose();
  out.rowwise() += mha.out_proj_bias.transpose();
  return out;
}

/// The naive path over a batch [batch, len, d_model], item by item on one thread.
template <Scalar T, class Enc>
Tensor3<T> naive_attention(const MultiHeadAttention<T, Enc>& mha, const Tensor3<T>& x,
                           const BatchInputs& in = {}) {
  const Index batch = x.dimension(0), len = x.dimension(1);
  relpos::detail::check_batch_width("naive attention", x.dimension(2), mha.d_model());
  in.check(batch, len);
  Tensor3<T> out(batch, len, mha.d_model());
  for (Index b = 0; b < batch; ++b)
    item(out, b) = naive_attention<T, Enc>(mha, item(x, b), in.item(b, len));
  return out;
}

}  // namespace relpos::test
