// SPDX-License-Identifier: MIT
// The `rotary` position type (spec §4): RoPE of Su et al. (2021), rotating q and k of every
// head by position-dependent angles so that q_i · k_j depends on p_j − p_i only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/growing_table.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/rotary_scaling.hpp>

namespace relpos {

/// The keys of spec §4 `rotary`.
struct RotaryConfig {
  double base = 10000;                // inv_freq_m = base^(−2m/r); > 0
  std::optional<Index> rotary_dim{};  // r: rotated components per head, even, 2..d_head;
                                      // absent: d_head (spec §4)
  bool interleaved = false;           // pairing, see Rotary
  std::optional<RotaryScaling> scaling = std::nullopt;  // spec §4 second wave; absent: unscaled
  bool operator==(const RotaryConfig&) const = default;
};

/// RoPE. Each pair (a, b) of a head becomes (a·cosθ − b·sinθ, a·sinθ + b·cosθ) with
/// θ = p·inv_freq_m, p the token's position (plus an optional offset, e.g. the length of a
/// decoding cache). Pairing:
///   interleaved = false (GPT-NeoX / LLaMA / Hugging Face `rotate_half`): x[m] with x[m + r/2];
///   interleaved = true  (GPT-J / RoFormer): x[2m] with x[2m + 1].
/// Components at index >= r pass through (partial rotary).
///
/// cos/sin are cached per position in a table (P, r) = [cos θ_0..θ_{r/2−1} | sin ...],
/// computed in double and cast, grown automatically (doubling) to the largest position
/// seen, thread-safe as every relpos table (detail::GrowingTable). A call rotates in place
/// in one pass over the data with no temporary of the input's size. Memory of the cache
/// is P·r scalars (a position 10^6 costs 10^6·r, as Hugging Face's cache at
/// max_position_embeddings), at most detail::kMaxCachedScalars: positions past that are
/// computed per token, in double as well, and not kept.
///
/// Scaling (spec §4 second wave, encodings/rotary_scaling.hpp) changes inv_freq and
/// multiplies cos and sin by the attention factor. linear, ntk, yarn and llama3 give one
/// table, as above. dynamic and longrope depend on the call length ℓ (the largest position
/// of the batch plus 1, Positions::call_length, or this sequence's when that is 0): they
/// keep one table per distinct key of scaling_table_key(ℓ) (longrope: two, short and long;
/// dynamic: one per ℓ' = max(ℓ, L0)), each grown like the unscaled one, so tokens and calls
/// of the same key never recompute it. At most kMaxLengthTables keys are kept; a new key
/// beyond that drops the least recently used table (a reader still holding it keeps it
/// alive), so lengths that vary call by call cost at most that many tables of memory and
/// one table build per new key. Nothing else carries over between calls: the result of a
/// call depends only on that call (unlike Hugging Face's stateful dynamic scaling).
///
/// Hook: transform_qk.
template <Scalar T>
class Rotary {
 public:
  using Scalar = T;
  using Config = RotaryConfig;
  static constexpr const char* name = "rotary";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's: rotary_dim against d_head, the scaling's own); one encoding
  // shared by every layer.
  static void check(const RotaryConfig& p, const ModelShape& m, const detail::Checker& c) {
    const std::int64_t d_head = m.d_head();
    c.positive("base", p.base);
    const std::int64_t r = p.rotary_dim.value_or(d_head);
    const std::string what =
        p.rotary_dim ? "" : " (rotary_dim defaults to d_head = " + std::to_string(d_head) + ")";
    if (r < 2) c.fail("rotary_dim", "must be >= 2, got " + std::to_string(r) + what);
    if (r % 2 != 0) c.fail("rotary_dim", "must be even, got " + std::to_string(r) + what);
    if (r > d_head)
      c.fail("rotary_dim",
             "must be <= d_head = " + std::to_string(d_head) + ", got " + std::to_string(r));
    if (p.scaling) check_scaling(*p.scaling, p.base, r, c.source());
  }
  template <TensorSource<T> Source>
  static auto loader(const RotaryConfig& p, const ModelShape& m, const Source&) {
    return [shared = Rotary(m.d_head(), p)](Index) { return shared; };
  }

  /// d_head: the width of one head. Throws relpos::Error naming the key on a bad value.
  /// At most this many length-dependent tables (dynamic, longrope) are kept.
  static constexpr std::size_t kMaxLengthTables = 8;

  Rotary(Index d_head, const RotaryConfig& config = {})
      : config_(validated(d_head, config)), d_head_(d_head) {
    position_limit_ = std::max<Index>(1, detail::kMaxCachedScalars / rotary_dim());
    if (config_.scaling && scaling_depends_on_length(*config_.scaling)) {
      by_length_ = std::make_shared<LengthTables>();
    } else {
      fixed_ = make_table(0);
    }
  }

  const RotaryConfig& config() const { return config_; }
  Index d_head() const { return d_head_; }
  Index rotary_dim() const { return *config_.rotary_dim; }
  bool interleaved() const { return config_.interleaved; }
  /// P: the positions 0..P−1 the cos/sin cache covers now.
  /// (0 for a length-dependent scaling: see cached_tables()).
  Index cached_positions() const { return fixed_ ? fixed_->cache->current().capacity : 0; }
  /// The number of length-dependent tables kept now (dynamic, longrope), 0 otherwise.
  std::size_t cached_tables() const {
    if (!by_length_) return 0;
    const std::lock_guard<std::mutex> lock(by_length_->mutex);
    return by_length_->tables.size();
  }
  /// Bytes of every cos/sin table kept now (the fixed one, or the length-dependent ones).
  std::size_t cached_bytes() const {
    if (fixed_) return fixed_->cache->cached_bytes();
    if (!by_length_) return 0;
    const std::lock_guard<std::mutex> lock(by_length_->mutex);
    std::size_t bytes = 0;
    for (const auto& entry : by_length_->tables) bytes += entry.second.first->cache->cached_bytes();
    return bytes;
  }
  /// inv_freq and the attention factor of a call of length ℓ (largest position + 1).
  RotaryFrequencies frequencies(std::int64_t call_length) const {
    return table_for(call_length)->freq;
  }

  /// A table that changes with the call's length (dynamic, longrope) cannot serve a cache:
  /// keys rotated with one length's table are not those of another's. Throws Error then.
  void check_cacheable(const char* what) const {
    const auto& scaling = config_.scaling;
    if (!scaling) return;
    const bool varies = std::holds_alternative<DynamicScaling>(*scaling) ||
                        std::holds_alternative<LongropeScaling>(*scaling);
    if (varies) {
      const std::string type = std::holds_alternative<DynamicScaling>(*scaling)
                                   ? std::string(DynamicScaling::type)
                                   : std::string(LongropeScaling::type);
      throw Error(std::string(what) + ": rotary scaling '" + type +
                  "' changes its table with the call length, so cached keys cannot be reused "
                  "or re-rotated (linear, ntk, yarn and llama3 can)");
    }
  }
  /// Cached keys moved by δ positions in place: shift_rotary_keys.
  void shift_keys(MatrixRef<T> keys, std::int64_t delta, Index n_heads) const {
    shift_rotary_keys(*this, keys, delta, n_heads);
  }

  /// Rotates every head of q and k in place. q, k: (len, n_heads·d_head), head h in
  /// columns [h·d_head, (h+1)·d_head). Token i is at position positions[i] + offset.
  void transform_qk(MatrixRef<T> q, MatrixRef<T> k, const Positions& positions, Index n_heads,
                    std::int64_t offset = 0) const {
    rotate(q, positions, n_heads, offset);
    rotate(k, positions, n_heads, offset);
  }

  /// Rotates x in place: (len, n_heads·d_head), e.g. one head's (len, d_head) block with
  /// n_heads = 1. Throws relpos::Error on a width that is not n_heads·d_head, or on
  /// positions that do not match the rows or are negative (after the offset).
  void rotate(MatrixRef<T> x, const Positions& positions, Index n_heads = 1,
              std::int64_t offset = 0) const {
    apply<false>(x, positions, n_heads, offset);
  }

  /// The backward of transform_qk (training, attention_grad.hpp): given ∂L/∂ of the rotated q
  /// and k, writes ∂L/∂ of q and k before the rotation, in place. Each pair's map is
  /// f·R(θ), R a rotation and f the attention factor, so its Jacobian's transpose is
  /// f·R(θ)ᵀ = f·R(−θ): the same table with sin negated. Positions and offset as the forward's.
  void transform_qk_backward(MatrixRef<T> dq, MatrixRef<T> dk, const Positions& positions,
                             Index n_heads, std::int64_t offset = 0) const {
    rotate_transposed(dq, positions, n_heads, offset);
    rotate_transposed(dk, positions, n_heads, offset);
  }

  /// g ← f·R(θ)ᵀ·g per pair: the transpose of rotate at the same positions (for gradients).
  /// Checks as rotate.
  void rotate_transposed(MatrixRef<T> g, const Positions& positions, Index n_heads = 1,
                         std::int64_t offset = 0) const {
    apply<true>(g, positions, n_heads, offset);
  }

 private:
  // rotate (Transposed = false) or its transpose (true: every sin negated).
  template <bool Transposed>
  void apply(MatrixRef<T> x, const Positions& positions, Index n_heads, std::int64_t offset) const {
    if (n_heads < 1 || x.cols() != n_heads * d_head_) {
      throw Error(std::string(name) + ": input: expected " + std::to_string(n_heads) +
                  " heads x d_head " + std::to_string(d_head_) + " = " +
                  std::to_string(n_heads * d_head_) + " columns, got " + std::to_string(x.cols()));
    }
    detail::check_positions(name, positions, x.rows(), offset);
    if (x.rows() == 0) return;
    // the cache grows to the largest position it may hold when that is worth it: always for
    // plain positions 0..len−1 (+ offset: a decoder's next tokens, so a warm step allocates
    // nothing), for explicit ids only when they are dense enough; other positions (hostile or
    // sparse ids) are computed per token instead
    Index cached = 0;
    std::int64_t largest = 0;
    for (Index i = 0; i < x.rows(); ++i) {
      const std::int64_t position = positions[i] + offset;
      largest = std::max(largest, position);
      if (position < position_limit_) cached = std::max(cached, static_cast<Index>(position) + 1);
    }
    // ℓ of spec §4: the batch's largest position + 1 when attention gives it
    const std::int64_t call_length =
        positions.call_length > 0 ? positions.call_length + offset : largest + 1;
    const std::shared_ptr<const Table> table = table_for(call_length);
    const std::vector<double>& inv_freq = table->freq.inv_freq;
    const double factor = table->freq.attention_factor;
    const auto current = table->cache->current();
    const auto snap = cached > current.capacity &&
                              detail::worth_growing(cached, positions.plain() ? cached : x.rows(),
                                                    position_limit_)
                          ? table->cache->at_least(cached)
                          : current;
    const Index half = rotary_dim() / 2;
    std::vector<T> beyond;  // cos | sin of one position past the cache: r values, not kept
    for (Index i = 0; i < x.rows(); ++i) {
      const std::int64_t position = positions[i] + offset;
      const T* cos = nullptr;
      if (position < snap.capacity) {
        cos = snap.rows->data() + position * snap.rows->cols();
      } else {
        beyond.resize(static_cast<std::size_t>(2 * half));
        cos_sin(inv_freq, factor, position, beyond.data());
        cos = beyond.data();
      }
      const T* sin = cos + half;
      T* row = x.data() + i * x.outerStride();
      // one loop per pairing, so each has unit strides the compiler can vectorize
      if (config_.interleaved) {
        // cos and ±sin spread to both lanes of each pair once per token, for every head: then
        // a head is one multiply-add over contiguous values, with no lane shuffles of the table
        for (Index m0 = 0; m0 < half; m0 += kPairBlock) {
          const Index pairs = std::min(kPairBlock, half - m0);
          T cos2[2 * kPairBlock];  // (cos_m, cos_m) per pair m
          T sin2[2 * kPairBlock];  // (−sin_m, +sin_m) per pair m
          for (Index m = 0; m < pairs; ++m) {
            cos2[2 * m] = cos2[2 * m + 1] = cos[m0 + m];
            const T s = Transposed ? -sin[m0 + m] : sin[m0 + m];
            sin2[2 * m] = -s;
            sin2[2 * m + 1] = s;
          }
          for (Index h = 0; h < n_heads; ++h) {
            rotate_interleaved(row + h * d_head_ + 2 * m0, cos2, sin2, pairs);
          }
        }
      } else if constexpr (Transposed) {
        // −sin per block of pairs, on the stack (a warm backward allocates nothing)
        for (Index m0 = 0; m0 < half; m0 += kPairBlock) {
          const Index pairs = std::min(kPairBlock, half - m0);
          T negated[kPairBlock];
          for (Index m = 0; m < pairs; ++m) negated[m] = -sin[m0 + m];
          for (Index h = 0; h < n_heads; ++h) {
            T* head = row + h * d_head_;
            rotate_half(head + m0, head + half + m0, cos + m0, negated, pairs);
          }
        }
      } else {
        for (Index h = 0; h < n_heads; ++h) {
          rotate_half(row + h * d_head_, row + h * d_head_ + half, cos, sin, half);
        }
      }
    }
  }

  static RotaryConfig validated(Index d_head, RotaryConfig config) {
    detail::check_positive("rotary: ", "d_head", d_head);
    // user errors name the key: "rotary: position.scaling.factor: must be > 0, got 0"
    check(config, ModelShape{.d_model = d_head, .n_heads = 1}, detail::Checker(name, "position"));
    config.rotary_dim = config.rotary_dim.value_or(d_head);
    return config;
  }

  // The half pairing: (a[m], b[m]) with a = head[0, r/2) and b = head[r/2, r), two contiguous
  // spans. cos, sin: r/2 values each, already times the attention factor. The spans never
  // overlap each other nor the table (__restrict), so the loop vectorizes with no alias check.
  static void rotate_half(T* __restrict a, T* __restrict b, const T* __restrict cos,
                          const T* __restrict sin, Index half) {
    for (Index m = 0; m < half; ++m) {
      const T x = a[m], y = b[m];
      a[m] = x * cos[m] - y * sin[m];
      b[m] = x * sin[m] + y * cos[m];
    }
  }

  // The interleaved pairing: (x[2m], x[2m + 1]), m < pairs, one contiguous span of 2·pairs.
  // cos2, sin2: the table spread per lane, (cos_m, cos_m) and (−sin_m, +sin_m).
  static constexpr Index kPairBlock = 64;  // pairs spread per block: 2·64 scalars of stack each
  static void rotate_interleaved(T* __restrict x, const T* __restrict cos2,
                                 const T* __restrict sin2, Index pairs) {
    for (Index m = 0; m < pairs; ++m) {
      const T a = x[2 * m], b = x[2 * m + 1];
      x[2 * m] = a * cos2[2 * m] + b * sin2[2 * m];
      x[2 * m + 1] = b * cos2[2 * m + 1] + a * sin2[2 * m + 1];
    }
  }

  // factor·cos(p·inv_freq_m) then factor·sin(p·inv_freq_m), m < r/2: in double, cast once.
  static void cos_sin(const std::vector<double>& inv_freq, double factor, std::int64_t p, T* out) {
    const std::size_t half = inv_freq.size();
    for (std::size_t m = 0; m < half; ++m) {
      const double theta = static_cast<double>(p) * inv_freq[m];
      out[m] = static_cast<T>(factor * std::cos(theta));
      out[half + m] = static_cast<T>(factor * std::sin(theta));
    }
  }

  // One set of frequencies and its growing cos | sin cache, (P, r).
  struct Table {
    RotaryFrequencies freq;
    std::shared_ptr<detail::GrowingTable<T>> cache;
  };
  // The length-dependent tables by scaling_table_key, with their last use for eviction.
  struct LengthTables {
    std::mutex mutex;
    std::map<std::int64_t, std::pair<std::shared_ptr<const Table>, std::uint64_t>> tables;
    std::uint64_t clock = 0;
  };

  std::shared_ptr<const Table> make_table(std::int64_t call_length) const {
    auto t = std::make_shared<Table>();
    t->freq = rotary_frequencies(config_.base, rotary_dim(), config_.scaling, call_length);
    t->cache = std::make_shared<detail::GrowingTable<T>>(
        [freq = t->freq](Index positions) {
          Matrix<T> rows(positions, 2 * static_cast<Index>(freq.inv_freq.size()));  // (P, r)
          for (Index p = 0; p < positions; ++p) {
            cos_sin(freq.inv_freq, freq.attention_factor, p, rows.row(p).data());
          }
          return rows;
        },
        position_limit_);
    return t;
  }

  std::shared_ptr<const Table> table_for(std::int64_t call_length) const {
    if (fixed_) return fixed_;
    const std::int64_t key = scaling_table_key(*config_.scaling, call_length);
    const std::lock_guard<std::mutex> lock(by_length_->mutex);
    auto& tables = by_length_->tables;
    const std::uint64_t now = ++by_length_->clock;
    if (auto it = tables.find(key); it != tables.end()) {
      it->second.second = now;
      return it->second.first;
    }
    if (tables.size() >= kMaxLengthTables) {
      auto oldest = tables.begin();
      for (auto it = tables.begin(); it != tables.end(); ++it) {
        if (it->second.second < oldest->second.second) oldest = it;
      }
      tables.erase(oldest);
    }
    auto table = make_table(call_length);
    tables.emplace(key, std::make_pair(table, now));
    return table;
  }

  RotaryConfig config_;  // rotary_dim resolved (always set)
  Index d_head_;
  Index position_limit_ = 1;                 // a cache covers at most positions 0..limit−1
  std::shared_ptr<const Table> fixed_;       // the one table, unless it depends on ℓ
  std::shared_ptr<LengthTables> by_length_;  // dynamic, longrope: shared by copies
};

/// Re-rotates rotary keys by δ in place: a key rotated at position p becomes the key rotated
/// at p + δ, since the rotation by (p + δ)·ω is the rotation by p·ω followed by δ·ω.
/// keys: (n, n_heads·d_head), as stored in a KVCache; angles δ·ω_m in double, cast once.
///
/// Scalings: the unscaled table and those whose inv_freq depends only on the config (linear,
/// ntk, yarn, llama3) allow it, with the encoding's own scaled ω. An attention factor (yarn)
/// multiplies cos and sin once, at the first rotation; this rotation uses cos and sin alone,
/// so it is never applied twice. A table that changes with the call's length (`dynamic`,
/// `longrope`) does not allow it: Error.
template <Scalar T, class Keys>
void shift_rotary_keys(const Rotary<T>& rotary, Keys&& keys, std::int64_t delta, Index n_heads) {
  rotary.check_cacheable("shift_rotary_keys");
  const Index dh = rotary.d_head(), r = rotary.rotary_dim(), half = r / 2;
  if (keys.cols() != n_heads * dh) {
    throw Error("shift_rotary_keys: keys: expected " + std::to_string(n_heads * dh) +
                " columns (n_heads x d_head), got " + std::to_string(keys.cols()));
  }
  if (delta == 0 || half == 0 || keys.rows() == 0) return;
  // ω_m as the encoding rotates with them (scaled where a scaling applies); the call length
  // does not matter for the length-independent tables allowed here
  const std::vector<double> omega = rotary.frequencies(1).inv_freq;
  std::vector<T> cs(static_cast<std::size_t>(2 * half));  // cos | sin of δ·ω_m
  for (Index m = 0; m < half; ++m) {
    const double theta = static_cast<double>(delta) * omega[static_cast<std::size_t>(m)];
    cs[static_cast<std::size_t>(m)] = static_cast<T>(std::cos(theta));
    cs[static_cast<std::size_t>(half + m)] = static_cast<T>(std::sin(theta));
  }
  const T* cos = cs.data();
  const T* sin = cos + half;
  const Index stride = rotary.interleaved() ? 2 : 1;
  const Index partner = rotary.interleaved() ? 1 : half;
  for (Index i = 0; i < keys.rows(); ++i) {
    for (Index h = 0; h < n_heads; ++h) {
      T* head = &keys(i, h * dh);
      for (Index m = 0; m < half; ++m) {
        T& a = head[m * stride];
        T& b = head[m * stride + partner];
        const T a0 = a;
        a = a0 * cos[m] - b * sin[m];
        b = a0 * sin[m] + b * cos[m];
      }
    }
  }
}

static_assert(Encoding<Rotary<float>> && TransformsQK<Rotary<float>> &&
                  ChecksCache<Rotary<float>> && ShiftsKeys<Rotary<float>>,
              "Rotary must provide transform_qk and the cache hooks");

}  // namespace relpos
