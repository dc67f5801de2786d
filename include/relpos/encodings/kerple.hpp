// SPDX-License-Identifier: MIT
// The `kerple` position type (spec §4, third wave): Chi et al. (2022), "KERPLE: Kernelized
// Relative Positional Embedding for Length Extrapolation", in the form NeMo/Megatron use. A
// score bias from a conditionally positive definite kernel of the distance, with two learned
// numbers per head shared by all layers:
//   log:   b_h(δ) = −r1_h · ln(1 + r2_h·|δ|)
//   power: b_h(δ) = −r1_h · |δ|^r2_h,  r2_h <= 2 (beyond 2 the kernel is no longer CPD)
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/checker.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/tensor_source.hpp>

namespace relpos {

/// The two kernels of spec §4 kerple.
enum class KerpleForm { log, power };

inline const char* kerple_form_name(KerpleForm form) {
  return form == KerpleForm::log ? "log" : "power";
}

/// The keys of spec §4 `kerple`. `form` is required: there is no default to fall back on.
struct KerpleConfig {
  std::optional<KerpleForm> form{};
  bool operator==(const KerpleConfig&) const = default;
};

/// The kerple score bias, symmetric in δ (the encoder form), added after the 1/sqrt(d_head)
/// scale. r1 and r2 are shared by all layers (spec §1: one `position.kerple_r1` and one
/// `position.kerple_r2`): give every layer the same SharedMatrix pair (copies share them).
/// Nothing else is stored: attention asks for the R values of a head and gathers them, never
/// an (len × len) bias.
///
/// Hooks: clamp_distance (the identity: the kernel never saturates), score_bias and its
/// backward (∂L/∂r1, ∂L/∂r2 per head, attention_grad.hpp).
template <Scalar T>
class KerpleBias {
 public:
  using Scalar = T;
  using Config = KerpleConfig;
  static constexpr const char* name = "kerple";
  static constexpr const char* r1_tensor = "position.kerple_r1";
  static constexpr const char* r2_tensor = "position.kerple_r2";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's: `form` is required); r1 and r2 [n_heads], one pair for all
  // layers, read once and shared. Their values are checked by the constructor, so a file
  // and code refuse the same numbers with the same message.
  static void check(const KerpleConfig& p, const ModelShape&, const detail::Checker& c) {
    if (!p.form) c.fail("form", "required key is missing");
  }
  static std::vector<TensorSpec> tensors(const KerpleConfig&, const ModelShape& m) {
    return {{r1_tensor, {m.n_heads}}, {r2_tensor, {m.n_heads}}};
  }
  template <TensorSource<T> Source>
  static auto loader(const KerpleConfig& p, const ModelShape& m, const Source& source) {
    return [shared = KerpleBias(
                m.n_heads, p, share(source.template vector<T>(r1_tensor, m.n_heads)),
                share(source.template vector<T>(r2_tensor, m.n_heads)))](Index) { return shared; };
  }

  /// r1, r2: n_heads numbers each, as a column ([n_heads, 1], what share(file.vector(...))
  /// gives) or a row. Throws relpos::Error naming the key, or the tensor and the head, when
  /// the form is absent, a shape is wrong, or a value is outside its domain (r1, r2 finite
  /// and > 0; r2 <= 2 in the power form).
  KerpleBias(Index n_heads, const KerpleConfig& config, SharedMatrix<T> r1, SharedMatrix<T> r2)
      : config_(config), r1_table_(std::move(r1)), r2_table_(std::move(r2)) {
    detail::check_positive("kerple: ", "n_heads", n_heads);
    check(config, ModelShape{.n_heads = n_heads}, detail::Checker(name, "position"));
    r1_ = per_head(r1_table_, r1_tensor, n_heads);
    r2_ = per_head(r2_table_, r2_tensor, n_heads);
    check_domain(r1_table_->data(), r2_table_->data(), n_heads);
  }

  // Training's in-place update (encodings/concept.hpp, TakesTensorsInPlace): the two shared
  // tables, held once by each of the model's layers, and this layer's copies in double.
  bool owns_tensors(Index n_layers) const {
    return r1_table_.use_count() == n_layers && r2_table_.use_count() == n_layers;
  }
  void check_assign(Index, const detail::NamedTensors<T>& source) const {
    const Index n = n_heads();
    check_domain(source.at({-1, r1_tensor}, {n}).values.data(),
                 source.at({-1, r2_tensor}, {n}).values.data(), n);
  }
  void assign(Index, const detail::NamedTensors<T>& source) {
    const Index n = n_heads();
    const T* r1 = source.at({-1, r1_tensor}, {n}).values.data();
    const T* r2 = source.at({-1, r2_tensor}, {n}).values.data();
    // share() made the tables non-const; owns_tensors() says nobody outside the model holds them
    std::copy_n(r1, n, const_cast<Matrix<T>&>(*r1_table_).data());
    std::copy_n(r2, n, const_cast<Matrix<T>&>(*r2_table_).data());
    std::copy_n(r1, n, r1_.begin());
    std::copy_n(r2, n, r2_.begin());
  }

  const KerpleConfig& config() const { return config_; }
  KerpleForm form() const { return *config_.form; }
  Index n_heads() const { return static_cast<Index>(r1_.size()); }
  /// The shared tables as given.
  const Matrix<T>& r1() const { return *r1_table_; }
  const Matrix<T>& r2() const { return *r2_table_; }

  std::int64_t clamp_distance(std::int64_t delta) const { return delta; }

  /// The backward of score_bias: g[c − lo] = ∂L/∂b_h(c) for c in [lo, hi] (the sum over the
  /// pairs at distance c), added into ∂L/∂r1_h and ∂L/∂r2_h (grad_r1, grad_r2: [n_heads],
  /// zero-filled when empty). With a = |c|:
  ///   log:   ∂b/∂r1 = −ln(1 + r2·a),  ∂b/∂r2 = −r1·a / (1 + r2·a)
  ///   power: ∂b/∂r1 = −a^r2,          ∂b/∂r2 = −r1·a^r2·ln a  (0 at a = 0, the limit)
  /// Summed in double, added once per call.
  void score_bias_backward(Index h, Index lo, Index hi, const T* g, Vector<T>& grad_r1,
                           Vector<T>& grad_r2) const {
    RELPOS_ASSERT(h >= 0 && h < n_heads() && lo <= hi,
                  "KerpleBias::score_bias_backward: bad head or span");
    prepare(grad_r1, r1_tensor);
    prepare(grad_r2, r2_tensor);
    const double r1 = r1_[static_cast<std::size_t>(h)];
    const double r2 = r2_[static_cast<std::size_t>(h)];
    double d1 = 0, d2 = 0;
    for (Index c = lo; c <= hi; ++c) {
      const double gc = static_cast<double>(g[c - lo]);
      const double a = std::abs(static_cast<double>(c));
      if (form() == KerpleForm::log) {
        d1 -= gc * std::log1p(r2 * a);
        d2 -= gc * r1 * a / (1 + r2 * a);
      } else if (a > 0) {
        const double p = std::pow(a, r2);
        d1 -= gc * p;
        d2 -= gc * r1 * p * std::log(a);
      }
    }
    grad_r1(h) += static_cast<T>(d1);
    grad_r2(h) += static_cast<T>(d2);
  }

  /// out[c − lo] = b_h(c) for c in [lo, hi], computed in double and cast once. The bias is
  /// even in c, so a span that straddles 0 evaluates each |c| once.
  void score_bias(Index h, Index lo, Index hi, T* out) const {
    RELPOS_ASSERT(h >= 0 && h < n_heads() && lo <= hi, "KerpleBias::score_bias: bad head or span");
    const double r1 = r1_[static_cast<std::size_t>(h)];
    const double r2 = r2_[static_cast<std::size_t>(h)];
    const auto bias = [&](Index c) {
      const double a = std::abs(static_cast<double>(c));
      // log1p: ln(1 + r2·|δ|) without the rounding of 1 + x for small r2·|δ|
      return static_cast<T>(form() == KerpleForm::log ? -r1 * std::log1p(r2 * a)
                                                      : -r1 * std::pow(a, r2));
    };
    for (Index c = lo; c <= hi; ++c) {
      const Index mirror = -c;  // already written when it lies in [lo, c)
      out[c - lo] = (c > 0 && mirror >= lo) ? out[mirror - lo] : bias(c);
    }
  }

 private:
  void prepare(Vector<T>& grad, const char* tensor) const {
    if (grad.size() == 0) grad = Vector<T>::Zero(n_heads());
    if (grad.size() != n_heads()) {
      throw Error(std::string("grad.") + tensor + ": expected [" + std::to_string(n_heads()) +
                  "], got [" + std::to_string(grad.size()) + "]");
    }
  }
  static std::vector<double> per_head(const SharedMatrix<T>& table, const char* tensor,
                                      Index n_heads) {
    if (!table || table->size() != n_heads || (table->rows() != 1 && table->cols() != 1)) {
      throw Error(
          std::string(tensor) + ": expected [n_heads=" + std::to_string(n_heads) + "], got " +
          (table ? "[" + std::to_string(table->rows()) + ", " + std::to_string(table->cols()) + "]"
                 : std::string("nothing")));
    }
    std::vector<double> out(static_cast<std::size_t>(n_heads));
    for (Index h = 0; h < n_heads; ++h) out[static_cast<std::size_t>(h)] = table->data()[h];
    return out;
  }
  // r1, r2 > 0 and finite; r2 <= 2 in the power form (n values each)
  void check_domain(const T* r1, const T* r2, Index n) const {
    for (Index h = 0; h < n; ++h) {
      in_domain(r1_tensor, h, static_cast<double>(r1[h]));
      in_domain(r2_tensor, h, static_cast<double>(r2[h]));
      if (*config_.form == KerpleForm::power && r2[h] > 2) {
        throw Error(std::string(r2_tensor) + "[" + std::to_string(h) +
                    "]: must be <= 2 in the power form, got " +
                    detail::number_text(static_cast<double>(r2[h])));
      }
    }
  }
  static void in_domain(const char* tensor, Index h, double v) {
    if (!(v > 0) || !std::isfinite(v)) {
      throw Error(std::string(tensor) + "[" + std::to_string(h) +
                  "]: must be a finite number > 0, got " + detail::number_text(v));
    }
  }

  KerpleConfig config_;
  SharedMatrix<T> r1_table_, r2_table_;  // n_heads each, shared by all layers
  std::vector<double> r1_, r2_;          // the same in double, per head
};

static_assert(Encoding<KerpleBias<float>> && HasScoreBias<KerpleBias<float>>,
              "KerpleBias must provide the score-bias hook");

}  // namespace relpos
