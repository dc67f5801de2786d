// SPDX-License-Identifier: MIT
// Incremental causal decoding with a key/value cache (spec §2, positions as data): per layer,
// keys are stored after rotary and values as they are (as llama.cpp, Hugging Face and
// CTranslate2 do); a chunk of new tokens attends to the cache plus itself with
// δ = p_j − p_i between new queries and cached keys; rotary keys can be re-rotated in place
// (the "context shift" of long chats).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <relpos/attention.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/buffer.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/tiled_attention.hpp>
#include <relpos/encoder.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/rotary.hpp>  // shift_rotary_keys, offered here since the start
#include <relpos/workspace.hpp>

namespace relpos {

/// The keys and values of one attention layer for one sequence, with each token's position
/// and key-padding flag. Storage doubles when full (amortized O(1) per token) up to `limit`
/// tokens; appending past the limit throws Error naming both numbers.
template <Scalar T>
class KVCache {
 public:
  /// d_model: the layer's width; limit: the most tokens this cache may ever hold (>= 1).
  KVCache(Index d_model, Index limit) : d_model_(d_model), limit_(limit) {
    if (d_model < 1) throw Error("KVCache: d_model expected >= 1, got " + std::to_string(d_model));
    if (limit < 1) throw Error("KVCache: limit expected >= 1, got " + std::to_string(limit));
  }

  Index size() const { return size_; }
  Index limit() const { return limit_; }
  Index capacity() const { return keys_.rows(); }
  Index d_model() const { return d_model_; }

  // keys after rotary, values as projected: (size, d_model), heads side by side
  auto keys() const { return keys_.topRows(size_); }
  auto values() const { return values_.topRows(size_); }
  auto keys() { return keys_.topRows(size_); }
  std::int64_t position(Index j) const { return positions_[static_cast<std::size_t>(j)]; }
  const std::int64_t* positions() const { return positions_.data(); }
  std::int64_t* positions() { return positions_.data(); }
  bool padded(Index j) const { return padded_[j]; }
  const bool* padding() const { return padded_.data(); }  // size() flags, true = padded

  /// Room for n tokens without growing (n <= limit).
  void reserve(Index n) {
    if (n > limit_) {
      throw Error("KVCache: " + std::to_string(n) + " tokens exceed the cache limit of " +
                  std::to_string(limit_));
    }
    if (n <= capacity()) return;
    const Index cap = std::min(limit_, std::max(n, 2 * capacity()));
    keys_.conservativeResize(cap, d_model_);
    values_.conservativeResize(cap, d_model_);
    positions_.resize(static_cast<std::size_t>(cap));
    padded_.conservativeResize(cap);
  }

  /// Appends n tokens: k, v (n, d_model); positions: n ids (>= 0); padding: n flags, or
  /// empty (none padded). Throws Error on another shape or length, or a negative id.
  template <class K, class V>
  void append(const K& k, const V& v, std::span<const std::int64_t> positions,
              std::span<const bool> padding = {}) {
    const Index n = k.rows();
    if (k.cols() != d_model_ || v.cols() != d_model_ || v.rows() != n) {
      throw Error("KVCache::append: k and v: expected (n, d_model = " + std::to_string(d_model_) +
                  "), got " + detail::shape_string(k.rows(), k.cols()) + " and " +
                  detail::shape_string(v.rows(), v.cols()));
    }
    const auto n_entries = static_cast<std::size_t>(n);
    if (positions.size() != n_entries || (!padding.empty() && padding.size() != n_entries)) {
      throw Error("KVCache::append: positions and padding: expected " + std::to_string(n) +
                  " entries (one per row of k; padding may be empty), got " +
                  std::to_string(positions.size()) + " and " + std::to_string(padding.size()));
    }
    for (std::size_t i = 0; i < n_entries; ++i) {
      if (positions[i] < 0) {
        throw Error("KVCache::append: positions[" + std::to_string(i) + "]: expected >= 0, got " +
                    std::to_string(positions[i]));
      }
    }
    if (size_ + n > limit_) {
      throw Error("KVCache: appending " + std::to_string(n) + " tokens to " +
                  std::to_string(size_) + " exceeds the cache limit of " + std::to_string(limit_));
    }
    reserve(size_ + n);
    keys_.middleRows(size_, n) = k;
    values_.middleRows(size_, n) = v;
    for (std::size_t i = 0; i < n_entries; ++i) {
      positions_[static_cast<std::size_t>(size_) + i] = positions[i];
      padded_[size_ + static_cast<Index>(i)] = !padding.empty() && padding[i];
    }
    size_ += n;
  }

  /// Forgets every token (keeps the storage).
  void clear() { size_ = 0; }
  /// Keeps the first n tokens (n <= size()), e.g. to drop rejected speculative tokens.
  void rewind(Index n) {
    if (n < 0 || n > size_) {
      throw Error("KVCache::rewind: expected 0 <= n <= size " + std::to_string(size_) + ", got " +
                  std::to_string(n));
    }
    size_ = n;
  }

 private:
  Index d_model_, limit_;
  Index size_ = 0;
  Matrix<T> keys_, values_;  // (capacity, d_model)
  std::vector<std::int64_t> positions_;
  Eigen::Array<bool, Eigen::Dynamic, 1> padded_;  // (capacity)
};

/// Scratch of cached attention (one sequence at a time); grows geometrically, so decoding
/// token by token allocates O(log n) times in all.
template <Scalar T>
struct DecodeWorkspace {
  detail::Buffer<T> qkv;               // (n, 3 d_model)
  detail::Buffer<T> z;                 // (n, d_model)
  detail::Buffer<T> residual, normed;  // (n, d_model)
  AttentionScratch<T> attention;       // attention's tiles and per-call rows
  SequenceWorkspace<T> ffn;            // the feed-forward's hidden layer
};

/// Attention of n new tokens over a layer's cache plus themselves (spec §3 with query and key
/// positions apart): x (n, d_model) → out (n, d_model). Appends the new keys (after rotary)
/// and values to `cache` first. Token i of the chunk is at cache index L0 + i (L0 = the cache's
/// size before) and sees key j when j <= L0 + i (causal by index, spec §2) and key j is not
/// padded. positions: n ids; padding: n flags or empty. The attention itself is the full
/// forward's kernel (detail/tiled_attention.hpp) with the chunk as queries and the cache as
/// keys, so every encoding hook is written once.
template <Scalar T, Encoding Enc>
void attend_cached(const MultiHeadAttention<T, Enc>& attn, ConstMatrixRef<T> x,
                   std::span<const std::int64_t> positions, std::span<const bool> padding,
                   KVCache<T>& cache, MatrixRef<T> out, DecodeWorkspace<T>& ws) {
  attn.validate();
  const Index n = x.rows(), d = attn.d_model();
  if (x.cols() != d || out.rows() != n || out.cols() != d) {
    throw Error("attend_cached: x and out: expected (n, d_model = " + std::to_string(d) +
                "), got " + detail::shape_string(x.rows(), x.cols()) + " and " +
                detail::shape_string(out.rows(), out.cols()));
  }
  if (positions.size() != static_cast<std::size_t>(n)) {
    throw Error("attend_cached: positions: expected " + std::to_string(n) +
                " entries (one per row of x), got " + std::to_string(positions.size()));
  }
  const Index first = cache.size();  // L0

  // q | k | v of the new tokens: (n, 3 d_model); rotary rotates only these
  auto qkv = detail::grown(ws.qkv, n, 3 * d);
  detail::linear<T>(x, attn.in_proj_weight, attn.in_proj_bias, qkv);
  if constexpr (TransformsQK<Enc>) {
    MatrixRef<T> q(qkv.leftCols(d));
    MatrixRef<T> k(qkv.middleCols(d, d));
    attn.encoding.transform_qk(q, k, Positions{n, positions.data()}, attn.n_heads());
  }
  cache.append(qkv.middleCols(d, d), qkv.rightCols(d), positions, padding);

  auto z = detail::grown(ws.z, n, d);  // (n, d_model)
  const detail::AttentionGeometry geometry{.queries = Positions{n, positions.data()},
                                           .keys = Positions{cache.size(), cache.positions()},
                                           .causal = true,
                                           .causal_offset = first,
                                           .key_padding = cache.padding()};
  detail::TiledAttention<T, Enc>(attn.encoding, attn.n_heads(), attn.d_head())
      .run(qkv.leftCols(d), cache.keys(), cache.values(), geometry, z, ws.attention);
  detail::linear<T>(z, attn.out_proj_weight, attn.out_proj_bias, out);
}

/// Causal decoding of one sequence through an Encoder stack: one KVCache per layer. Each
/// forward() takes the next chunk of tokens (one or more) and gives their outputs, equal to
/// the rows of one causal forward over everything so far. Positions continue from the cache
/// (next_position(), 0 at the start) unless explicit ids are given (left padding: give the
/// padded tokens' flags and the real tokens positions 0, 1, ...).
///
/// Packed sequences: supported by explicit ids that restart (0, 1, 2, 0, 1, ...) for rotary
/// and relative encodings, where only p_j − p_i matters; but causality is by index, so a
/// later sequence still sees the earlier one's tokens (no block mask through the cache).
/// `additive` is defined over indices with a window that looks ahead and cannot be decoded
/// incrementally: the constructor refuses it.
template <Scalar T, Encoding Enc>
class Decoder {
 public:
  /// encoder: must outlive the decoder; max_tokens: each layer's cache limit.
  Decoder(const Encoder<T, Enc>& encoder, Index max_tokens) : encoder_(&encoder) {
    encoder.validate();
    // what the encoding cannot do with a cache, it says (encodings/concept.hpp)
    if constexpr (requires { Enc::cache_refusal; }) {
      throw Error(std::string("Decoder: position type ") + Enc::name + " " + Enc::cache_refusal);
    }
    if constexpr (ChecksCache<Enc>) {
      for (const Block<T, Enc>& b : encoder.layers) b.self_attn.encoding.check_cacheable("Decoder");
    }
    for (std::size_t l = 0; l < encoder.layers.size(); ++l) {
      caches_.emplace_back(encoder.d_model(), max_tokens);
    }
  }

  Index size() const { return caches_.empty() ? 0 : caches_.front().size(); }
  std::int64_t next_position() const { return next_; }
  const KVCache<T>& cache(Index layer) const { return caches_[static_cast<std::size_t>(layer)]; }

  /// Room for n tokens in every layer, so later forwards do not grow the caches.
  void reserve(Index n) {
    for (KVCache<T>& c : caches_) c.reserve(n);
  }
  /// Forgets everything (keeps the storage).
  void clear() {
    for (KVCache<T>& c : caches_) c.clear();
    next_ = 0;
  }

  /// Keeps the first n tokens of every layer; next_position() becomes one past the largest
  /// position kept (0 when none).
  void rewind(Index n) {
    for (KVCache<T>& c : caches_) c.rewind(n);
    next_ = 0;
    if (!caches_.empty()) {
      for (Index j = 0; j < n; ++j) next_ = std::max(next_, caches_.front().position(j) + 1);
    }
  }

  /// x, out: (n, d_model), not aliased. positions: n ids >= 0, or empty (next_position()
  /// onwards); padding: n flags (true = padded key), or empty (none). Throws Error on a
  /// span of another length than n, a bad id, when a cache would pass its limit, or when
  /// the encoder does not pass Encoder::validate().
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out, std::span<const std::int64_t> positions = {},
               std::span<const bool> padding = {}) {
    encoder_->validate();
    if (caches_.size() != encoder_->layers.size()) {
      throw Error("Decoder::forward: the encoder has " + std::to_string(encoder_->layers.size()) +
                  " layers, the decoder was built for " + std::to_string(caches_.size()));
    }
    const Index n = x.rows(), d = encoder_->d_model();
    if (x.cols() != d || out.rows() != n || out.cols() != d) {
      throw Error("Decoder::forward: x and out: expected (n, " + std::to_string(d) + "), got (" +
                  std::to_string(x.rows()) + ", " + std::to_string(x.cols()) + ") and (" +
                  std::to_string(out.rows()) + ", " + std::to_string(out.cols()) + ")");
    }
    const auto check_length = [n](const char* what, std::size_t size) {
      if (size != 0 && size != static_cast<std::size_t>(n)) {
        throw Error(std::string("Decoder::forward: ") + what + ": expected " + std::to_string(n) +
                    " entries (one per row of x), got " + std::to_string(size));
      }
    };
    check_length("positions", positions.size());
    check_length("padding", padding.size());
    if (n == 0) return;
    if (size() + n > (caches_.empty() ? 0 : caches_.front().limit())) {
      throw Error("Decoder: " + std::to_string(size()) + " cached + " + std::to_string(n) +
                  " new tokens exceed the cache limit of " +
                  std::to_string(caches_.front().limit()));
    }
    // the chunk's positions: given, or continuing from the cache
    if (ids_.size() < static_cast<std::size_t>(n)) ids_.resize(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) {
      const std::int64_t p =
          !positions.empty() ? positions[static_cast<std::size_t>(i)] : next_ + i;
      if (p < 0) {
        throw Error("position_ids[" + std::to_string(i) + "]: expected >= 0, got " +
                    std::to_string(p));
      }
      ids_[static_cast<std::size_t>(i)] = p;
    }
    for (Index i = 0; i < n; ++i) next_ = std::max(next_, ids_[static_cast<std::size_t>(i)] + 1);
    const std::span<const std::int64_t> ids(ids_.data(), static_cast<std::size_t>(n));

    out = x;
    if constexpr (EncodesInput<Enc>) {
      if (!encoder_->layers.empty()) {
        encoder_->layers.front().self_attn.encoding.add_to_input(out, Positions{n, ids.data()});
      }
    }
    detail::grown(ws_.residual, n, d);
    detail::grown(ws_.normed, n, d);
    for (std::size_t l = 0; l < encoder_->layers.size(); ++l) {
      const Block<T, Enc>& block = encoder_->layers[l];
      auto branch = ws_.residual.matrix(n, d);  // (n, d_model)
      if (block.norm_first) {
        auto normed = ws_.normed.matrix(n, d);  // (n, d_model)
        block.norm1.forward(out, normed);
        attend_cached<T, Enc>(block.self_attn, normed, ids, padding, caches_[l], branch, ws_);
        out += branch;
        block.norm2.forward(out, normed);
        block.ffn.forward(normed, branch, ws_.ffn);
        out += branch;
      } else {
        attend_cached<T, Enc>(block.self_attn, out, ids, padding, caches_[l], branch, ws_);
        out += branch;
        block.norm1.forward(out, out);
        block.ffn.forward(out, branch, ws_.ffn);
        out += branch;
        block.norm2.forward(out, out);
      }
    }
    if (encoder_->norm) encoder_->norm->forward(out, out);
  }

  /// Encodings with a shift_keys hook (rotary): moves every cached token's position by δ
  /// (their keys re-encoded in place, see shift_rotary_keys), and next_position() with them;
  /// a position that would become negative throws Error. Typical use: drop the oldest
  /// tokens' effect by shifting by −k.
  void shift_positions(std::int64_t delta) requires ShiftsKeys<Enc> {
    for (KVCache<T>& c : caches_) {
      for (Index j = 0; j < c.size(); ++j) {
        if (c.position(j) + delta < 0) {
          throw Error("Decoder::shift_positions: cached position " + std::to_string(c.position(j)) +
                      " + " + std::to_string(delta) + " would be negative");
        }
      }
    }
    for (std::size_t l = 0; l < caches_.size(); ++l) {
      KVCache<T>& c = caches_[l];
      const MultiHeadAttention<T, Enc>& attn = encoder_->layers[l].self_attn;
      // keys: (size, d_model), heads side by side; only the q|k column block holds keys
      auto k = c.keys();
      attn.encoding.shift_keys(k, delta, attn.n_heads());
      for (Index j = 0; j < c.size(); ++j) c.positions()[j] += delta;
    }
    next_ = std::max<std::int64_t>(0, next_ + delta);
  }

 private:
  const Encoder<T, Enc>* encoder_;
  std::vector<KVCache<T>> caches_;
  std::vector<std::int64_t> ids_;
  std::int64_t next_ = 0;
  DecodeWorkspace<T> ws_;
};

}  // namespace relpos
