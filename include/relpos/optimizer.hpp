// SPDX-License-Identifier: MIT
// The optimizer of spec §6: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay
// Regularization") with the semantics of torch.optim.AdamW, and global gradient-norm clipping
// with those of torch.nn.utils.clip_grad_norm_. Both see the model as a list of named flat
// parameters (ParameterRef), so they know nothing of attention or encodings; saving and
// resuming the state is io/optimizer_state.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <relpos/core.hpp>

namespace relpos {

/// One parameter tensor seen flat: `size` elements at `value` and its gradient at `grad`
/// (both in the tensor's storage order; the optimizer only needs them element by element).
/// `name` is the model file's tensor name: the optimizer keys its state by it.
template <Scalar T>
struct ParameterRef {
  std::string name;
  T* value = nullptr;
  T* grad = nullptr;
  Index size = 0;
};

/// torch.optim.AdamW's hyper-parameters and defaults, except weight_decay: spec §6's 0.01 is
/// also torch's default.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

/// AdamW, one update per step() for every parameter given, as torch.optim.AdamW (amsgrad off):
///   θ ← θ·(1 − lr·λ)                               decoupled weight decay, before the update
///   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
///   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
/// with t the parameter's own step count (1 at its first update). The moments are kept in T
/// (torch keeps them in the parameter's dtype) and each operation rounds to T in torch's order,
/// so a float run follows a float32 torch run to rounding. A parameter seen for the first time
/// starts with m = v = 0 and t = 0, as in torch; the parameters of one step may differ from the
/// last one's (a parameter not given is not updated and keeps its state).
template <Scalar T>
class AdamW {
 public:
  /// A parameter's state: its moments (size elements each) and completed steps.
  struct Moments {
    Vector<T> exp_avg;     // m
    Vector<T> exp_avg_sq;  // v
    std::int64_t steps = 0;
  };

  explicit AdamW(AdamWOptions options = {}) : options_(options) { check(options_); }

  const AdamWOptions& options() const { return options_; }

  /// The learning rate of the next steps, for a schedule (torch: param_group["lr"] = lr); the
  /// moments are kept. Finite and > 0, as at construction.
  void set_lr(double lr) {
    AdamWOptions o = options_;
    o.lr = lr;
    check(o);
    options_ = o;
  }

  /// Per parameter name, as save / resume need it.
  const std::map<std::string, Moments>& state() const { return state_; }

  /// Replaces the whole state (io::load_optimizer_state). Each entry's two moments must have
  /// the same size and its step count be >= 0; the sizes are checked against the parameters at
  /// the next step().
  void restore(std::map<std::string, Moments> state) {
    for (const auto& [name, m] : state) {
      if (m.exp_avg.size() != m.exp_avg_sq.size()) {
        throw Error("AdamW state of '" + name + "': exp_avg has " +
                    std::to_string(m.exp_avg.size()) + " elements but exp_avg_sq has " +
                    std::to_string(m.exp_avg_sq.size()));
      }
      if (m.steps < 0) {
        throw Error("AdamW state of '" + name + "': step count " + std::to_string(m.steps) +
                    " is negative");
      }
    }
    state_ = std::move(state);
  }

  /// One update of every parameter in `params` from its gradient (which it does not change).
  /// A name given twice, a null pointer, a negative size or a state of another size is an
  /// Error naming the parameter; nothing is updated then.
  void step(const std::vector<ParameterRef<T>>& params) {
    // a name given twice: adjacent once sorted (in a vector kept between steps, so a warm step
    // allocates nothing)
    names_.clear();
    for (const ParameterRef<T>& p : params) names_.push_back(p.name);
    std::sort(names_.begin(), names_.end());
    const auto twice = std::adjacent_find(names_.begin(), names_.end());
    for (const ParameterRef<T>& p : params) {
      check(p);
      if (twice != names_.end() && p.name == *twice) {
        throw Error("AdamW: parameter '" + p.name + "' given twice in one step");
      }
      const auto it = state_.find(p.name);
      if (it != state_.end() && it->second.exp_avg.size() != p.size) {
        throw Error("AdamW: parameter '" + p.name + "' has " + std::to_string(p.size) +
                    " elements but its optimizer state has " +
                    std::to_string(it->second.exp_avg.size()));
      }
    }
    for (const ParameterRef<T>& p : params) update(p, moments(p));
  }

 private:
  static void check(const AdamWOptions& o) {
    auto require = [](bool ok, const std::string& what) {
      if (!ok) throw Error("AdamW: " + what);
    };
    require(std::isfinite(o.lr) && o.lr > 0, "lr must be finite and > 0, got " + num(o.lr));
    require(o.beta1 >= 0 && o.beta1 < 1, "beta1 must be in [0, 1), got " + num(o.beta1));
    require(o.beta2 >= 0 && o.beta2 < 1, "beta2 must be in [0, 1), got " + num(o.beta2));
    require(std::isfinite(o.eps) && o.eps >= 0, "eps must be finite and >= 0, got " + num(o.eps));
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0,
            "weight_decay must be finite and >= 0, got " + num(o.weight_decay));
  }
  static std::string num(double x) { return std::to_string(x); }

  static void check(const ParameterRef<T>& p) {
    if (p.size < 0) {
      throw Error("AdamW: parameter '" + p.name + "' has a negative size " +
                  std::to_string(p.size));
    }
    if (p.size > 0 && (p.value == nullptr || p.grad == nullptr)) {
      throw Error("AdamW: parameter '" + p.name + "' has a null value or gradient pointer");
    }
  }

  Moments& moments(const ParameterRef<T>& p) {
    Moments& m = state_[p.name];
    if (m.exp_avg.size() != p.size) {  // first sight (sizes were checked against a stored state)
      m.exp_avg = Vector<T>::Zero(p.size);
      m.exp_avg_sq = Vector<T>::Zero(p.size);
    }
    return m;
  }

  void update(const ParameterRef<T>& p, Moments& s) const {
    const AdamWOptions& o = options_;
    s.steps += 1;
    const double t = static_cast<double>(s.steps);
    // scalars in double as torch's Python side computes them, rounded to T where torch's
    // tensor ops take them
    const T decay = static_cast<T>(1.0 - o.lr * o.weight_decay);
    const T b1 = static_cast<T>(o.beta1), one_minus_b1 = static_cast<T>(1.0 - o.beta1);
    const T b2 = static_cast<T>(o.beta2), one_minus_b2 = static_cast<T>(1.0 - o.beta2);
    const T step_size = static_cast<T>(o.lr / (1.0 - std::pow(o.beta1, t)));
    const T bias2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(o.beta2, t)));
    const T eps = static_cast<T>(o.eps);
    // Eigen's array ops over chunks that stay in L1: vectorised (a scalar loop was not, for
    // std::sqrt's errno and the four pointers' possible aliasing) and still one trip to memory
    // per element. Chunk boundaries do not change any element's arithmetic.
    constexpr Index kChunk = 1024;
    for (Index i0 = 0; i0 < p.size; i0 += kChunk) {
      const Index n = std::min(kChunk, p.size - i0);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> theta(p.value + i0, n);
      Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> g(p.grad + i0, n);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> m(s.exp_avg.data() + i0, n);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> v(s.exp_avg_sq.data() + i0, n);
      theta *= decay;
      m = m * b1 + g * one_minus_b1;
      v = v * b2 + one_minus_b2 * (g * g);
      theta += -step_size * (m / (v.sqrt() / bias2_sqrt + eps));
    }
  }

  AdamWOptions options_;
  std::map<std::string, Moments> state_;
  std::vector<std::string_view> names_;  // step()'s scratch: the parameters' names, sorted
};

/// Scales every gradient by min(1, max_norm / (‖g‖₂ + 1e-6)), ‖g‖₂ the 2-norm of all of them
/// together, and returns ‖g‖₂ (torch.nn.utils.clip_grad_norm_ with norm_type 2). The norm is
/// summed in double. max_norm must be finite and > 0; a non-finite norm (a NaN or inf
/// gradient) is returned as it is and the gradients are scaled by it as torch does (its
/// error_if_nonfinite defaults to false), so the caller sees it.
template <Scalar T>
double clip_grad_norm(const std::vector<ParameterRef<T>>& params, double max_norm) {
  if (!(std::isfinite(max_norm) && max_norm > 0)) {
    throw Error("clip_grad_norm: max_norm must be finite and > 0, got " + std::to_string(max_norm));
  }
  double sum_sq = 0;
  for (const ParameterRef<T>& p : params) {
    if (p.size > 0 && p.grad == nullptr) {
      throw Error("clip_grad_norm: parameter '" + p.name + "' has a null gradient pointer");
    }
    for (Index i = 0; i < p.size; ++i) sum_sq += double(p.grad[i]) * double(p.grad[i]);
  }
  const double total = std::sqrt(sum_sq);
  const double coef = max_norm / (total + 1e-6);
  // torch multiplies by min(1, coef) even when it is 1, which changes nothing; a NaN coef
  // (NaN gradients) is applied as torch's clamp passes it
  if (coef < 1.0 || std::isnan(coef)) {
    const T c = static_cast<T>(coef);
    for (const ParameterRef<T>& p : params) {
      for (Index i = 0; i < p.size; ++i) p.grad[i] *= c;
    }
  }
  return total;
}

}  // namespace relpos
