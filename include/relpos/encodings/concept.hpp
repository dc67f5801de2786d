// SPDX-License-Identifier: MIT
// The plug-in contract between a positional encoding and attention (spec §3): one C++20
// concept and the few small types its hooks exchange. Every hook is optional; attention asks
// at compile time (if constexpr) which ones an encoding has, so `none` costs nothing and a
// new encoding never edits attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/checker.hpp>
#include <relpos/distance_rows.hpp>
#include <relpos/positions.hpp>
#include <relpos/tensor_source.hpp>

namespace relpos {

/// A read-only table shared by the encodings of every layer (t5's relative_attention_bias,
/// xl's u and v): the one way relpos passes shared tables. Give each layer the same pointer.
template <class T>
using SharedMatrix = std::shared_ptr<const Matrix<T>>;

/// A copy of m as a SharedMatrix (e.g. share(file.matrix<float>("position.r_w_bias"))).
/// The matrix itself is not const, only the handle: training may update the copy in place when
/// nothing outside the model holds it (TakesTensorsInPlace).
template <class Derived>
SharedMatrix<typename Derived::Scalar> share(const Eigen::MatrixBase<Derived>& m) {
  return std::make_shared<Matrix<typename Derived::Scalar>>(m);
}

/// The hooks, each its own concept so attention can test for it.
///
/// transform_qk(q, k, positions, n_heads): change q and k in place, q and k being
///   (len, n_heads * d_head) with head h in columns [h*d_head, (h+1)*d_head) (rotary).
///   Rotary also takes a trailing position offset (default 0) for decoding with a cache.
template <class E>
concept TransformsQK = requires(const E& e, MatrixRef<typename E::Scalar> q,
                                MatrixRef<typename E::Scalar> k, const Positions& p, Index h) {
  e.transform_qk(q, k, p, h);
};

/// clamp_distance(δ): the distance an encoding actually uses for δ (clamp(δ, −K, K) for a
///   maximum distance K, δ itself without one). Needed by every distance-indexed hook.
/// key_rows(lo, hi): the rows aK(c) for c in [lo, hi] (spec §3), (hi − lo + 1, d_head);
///   lo and hi are clamped distances. The rows are cached; a span not cached yet grows the
///   cache (thread-safe), and the returned DistanceRows keeps its snapshot alive.
/// uses_keys(): whether the term is on for this instance. The hook exists at compile time,
///   the flag (config `keys`) is a run-time value, so attention does
///   `if constexpr (HasKeyTerm<E>) { if (enc.uses_keys()) ... }`; key_rows must not be
///   called when uses_keys() is false.
template <class E>
concept HasKeyTerm = requires(const E& e, std::int64_t delta, Index lo, Index hi) {
  { e.clamp_distance(delta) } -> std::convertible_to<std::int64_t>;
  { e.key_rows(lo, hi) } -> std::same_as<DistanceRows<typename E::Scalar>>;
  { e.uses_keys() } -> std::convertible_to<bool>;
};

/// value_rows(lo, hi): the rows aV(c) for c in [lo, hi], (hi − lo + 1, d_head), as key_rows.
/// uses_values(): whether the term is on (config `values`), as uses_keys().
template <class E>
concept HasValueTerm = requires(const E& e, std::int64_t delta, Index lo, Index hi) {
  { e.clamp_distance(delta) } -> std::convertible_to<std::int64_t>;
  { e.value_rows(lo, hi) } -> std::same_as<DistanceRows<typename E::Scalar>>;
  { e.uses_values() } -> std::convertible_to<bool>;
};

/// score_bias(h, lo, hi, out): b_h(c) of head h for every clamped distance c in [lo, hi],
///   written to out[c − lo] (hi − lo + 1 values), added to head h's scores after the
///   1/sqrt(d_head) scale (spec §3; t5, alibi). Attention gathers these R values into the
///   (len × len) scores by the same distance index as the key term, so no (n_heads × len ×
///   len) bias ever exists. clamp_distance(δ) must map every δ to a c with the same b_h.
template <class E>
concept HasScoreBias = requires(const E& e, std::int64_t delta, Index h, Index lo, Index hi,
                                typename E::Scalar* out) {
  { e.clamp_distance(delta) } -> std::convertible_to<std::int64_t>;
  e.score_bias(h, lo, hi, out);
};

/// Per-head relative rows, added to the scores before the scale (Transformer-XL, Dai et al.
/// 2019; DeBERTa's c2p, He et al. 2021): q_i · r_h(c_ij).
/// head_key_rows(lo, hi): the rows r(c) for clamped c in [lo, hi], (hi − lo + 1,
///   n_heads · d_head), head h in columns [h·d_head, (h+1)·d_head): unlike aK they differ
///   per head. uses_head_keys() (optional, run-time, as uses_keys()): whether the term is on.
template <class E>
concept HasHeadKeyTerm = requires(const E& e, std::int64_t delta, Index lo, Index hi) {
  { e.clamp_distance(delta) } -> std::convertible_to<std::int64_t>;
  { e.head_key_rows(lo, hi) } -> std::same_as<DistanceRows<typename E::Scalar>>;
};

/// Transformer-XL's two biases beside its head key term: u_h · k_j + v_h · r_h(c_ij), so its
/// terms read u_h·k_j + (q_i + v_h)·r_h(c_ij). content_bias() = u, position_bias() = v:
/// (n_heads, d_head) each.
template <class E>
concept HasXlBiases = HasHeadKeyTerm<E> && requires(const E& e) {
  { e.content_bias() } -> std::convertible_to<const Matrix<typename E::Scalar>&>;
  { e.position_bias() } -> std::convertible_to<const Matrix<typename E::Scalar>&>;
};

/// The same gather with the roles of query and key swapped (DeBERTa's p2c): k_j · s_h(c_ij),
/// added before the scale, c_ij the clamped p_j − p_i as everywhere.
/// head_query_rows(lo, hi): the rows s(c) for clamped c in [lo, hi], (hi − lo + 1,
///   n_heads · d_head), as head_key_rows. uses_head_queries() (optional): whether it is on.
template <class E>
concept HasHeadQueryTerm = requires(const E& e, std::int64_t delta, Index lo, Index hi) {
  { e.clamp_distance(delta) } -> std::convertible_to<std::int64_t>;
  { e.head_query_rows(lo, hi) } -> std::same_as<DistanceRows<typename E::Scalar>>;
};

/// score_scale_factor(): f in the scale 1/sqrt(d_head · f) of the scores (absent: f = 1).
///   DeBERTa divides by sqrt(d_head · (1 + c2p + p2c)), one unit per term it adds.
template <class E>
concept ScalesScores = requires(const E& e) {
  { e.score_scale_factor() } -> std::convertible_to<double>;
};

/// The scale of the scores before the score bias: 1/sqrt(d_head · f).
template <class E>
typename E::Scalar score_scale(const E& e, Index d_head) {
  using T = typename E::Scalar;
  if constexpr (ScalesScores<E>) {
    return T(1) / static_cast<T>(std::sqrt(static_cast<double>(d_head) * e.score_scale_factor()));
  } else {
    (void)e;
    return T(1) / std::sqrt(static_cast<T>(d_head));
  }
}

/// add_to_input(x, positions): an encoding of the first block's input (absolute, additive);
///   x is (len, d_model), changed in place.
template <class E>
concept EncodesInput = requires(const E& e, MatrixRef<typename E::Scalar> x, const Positions& p) {
  e.add_to_input(x, p);
};

/// An encoding: a type with a Scalar and a name, and any subset of the hooks above.
template <class E>
concept Encoding = requires {
  typename E::Scalar;
  { E::name } -> std::convertible_to<const char*>;
}
&&Scalar<typename E::Scalar>;

/// Attention's view of an encoding: the hooks that act inside attention.
template <class E>
inline constexpr bool has_attention_hooks =
    TransformsQK<E> || HasKeyTerm<E> || HasValueTerm<E> || HasScoreBias<E> || HasHeadKeyTerm<E> ||
    HasHeadQueryTerm<E> || ScalesScores<E>;

/// Decoding with a cache (kv_cache.hpp), hooks an encoding may have:
/// check_cacheable(what): throws Error (prefixed `what`) when cached keys of this instance
///   cannot be reused (rotary with a table that changes with the call length).
/// shift_keys(keys, δ, n_heads): moves cached keys (n, n_heads·d_head) by δ positions in
///   place (rotary); Decoder::shift_positions exists for encodings that have it.
template <class E>
concept ChecksCache = requires(const E& e, const char* what) {
  e.check_cacheable(what);
};
template <class E>
concept ShiftsKeys = requires(const E& e, MatrixRef<typename E::Scalar> keys, std::int64_t delta,
                              Index n_heads) {
  e.shift_keys(keys, delta, n_heads);
};

/// What an encoding does not support, declared in its own header as a static constant
/// (absent: supported):
///   static constexpr bool takes_position_ids = false;  explicit position ids are an error
///     (Model and read_inputs refuse them before any work);
///   static constexpr const char* cache_refusal = "...";  Decoder refuses the encoding,
///     the text saying why ("Decoder: position type <name> <cache_refusal>").
template <class E>
inline constexpr bool takes_position_ids = [] {
  if constexpr (requires { E::takes_position_ids; })
    return bool(E::takes_position_ids);
  else
    return true;
}();

// ---- The model-file side of an encoding ---------------------------------------------------
// Model (model.hpp) and config.json (io/position_config.hpp) reach every encoding through the
// type list in io/position_config.hpp and these static members, so an encoding's config,
// checks, tensors and loading live in its own header (its JSON keys beside it, in
// io/positions/<name>.hpp) and nothing else names it:
//   using Config = XConfig;   the `position` object of config.json for this type, with the
//     spec's defaults; equality-comparable, one Config per encoding.
//   static void check(const Config&, const ModelShape&, const detail::Checker&);
//     the encoding's one rule for its config against the model's sizes (optional: none has
//     none), run by config.json's reading and by the constructor alike, so both refuse the
//     same values with the same text (detail/checker.hpp's convention).
//   static std::vector<TensorSpec> tensors(const Config&, const ModelShape&);
//   static std::vector<TensorSpec> layer_tensors(const Config&, const ModelShape&, Index n);
//     the tensors it adds to the model file, once and per layer n (both optional).
//   template <TensorSource<T> S> static auto loader(const Config&, const ModelShape&, const S&);
//     reads its tensors and gives make(n) → the encoding of layer n.

/// Training's update of an encoding's own tensors without rebuilding it (Model::assign_weights,
/// after every optimizer step), so that a warm training step allocates nothing. Optional: an
/// encoding without it is built again from the new tensors.
///   owns_tensors(n_layers): whether its storage is held by the layers of one model and nobody
///     else (a table shared by all layers is held once per layer). A copy of the encoding (a
///     copied Model), or a reader holding its rows (DistanceRows, RelativeView), makes it false,
///     and the model then builds new encodings instead: nobody sees another's update
///     (copy-on-write).
///   check_assign(n, source): throws Error naming the first tensor of layer n whose new value
///     in `source` has a wrong shape or lies outside its domain; changes nothing.
///   assign(n, source): copies them in, in place, and recomputes what derives from them (xl's
///     rows r(c)); called after check_assign passed for every layer.
template <class E>
concept TakesTensorsInPlace = requires(E& e, const E& ce, Index n,
                                       const detail::NamedTensors<typename E::Scalar>& source) {
  { ce.owns_tensors(n) } -> std::convertible_to<bool>;
  ce.check_assign(n, source);
  e.assign(n, source);
};

/// The model sizes an encoding's config is checked against and its tensors are shaped by.
/// config.json gives all of them; an encoding built in code fills in what its constructor
/// was given (a Rotary of d_head: d_model = d_head, n_heads = 1; a T5Bias: n_heads and its
/// causal flag) and calls the same check(), whose rule reads only those.
struct ModelShape {
  std::int64_t d_model = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_layers = 0;
  bool causal = false;
  bool bias = true;              // the attention projections have biases (spec §7 `bias`)
  double layer_norm_eps = 1e-5;  // eps of a norm an encoding owns (deberta's rel_norm)
  std::int64_t d_head() const { return d_model / n_heads; }
};

}  // namespace relpos
