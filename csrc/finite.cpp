#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "finite.h"

#include <ATen/ops/abs.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <sstream>

namespace neuralode {
namespace {

// A 0-d float64 on x's device that is finite iff every element of x is: their sum in
// float64 (NaN and Inf propagate into it; a float64 sum of float32 or float64 values
// that are finite does not overflow short of 1e308). One kernel, no host read. A
// complex tensor (a complex parameter's gradient) sums its moduli: a NaN or Inf in an
// imaginary part counts too, and nothing is cast from complex to real.
at::Tensor finite_sum(const at::Tensor& x) {
  return x.is_complex() ? x.detach().abs().sum(at::kDouble) : x.detach().sum(at::kDouble);
}

std::string time_of(const at::Tensor& t, int64_t i) {
  std::ostringstream s;
  s.precision(17);
  at::Tensor ti = t[i].detach().to(at::kDouble).cpu();
  if (ti.numel() == 1) {
    s << ti.item<double>();
  } else {
    s << "t[" << i << "] (per sample)";
  }
  return s.str();
}

}  // namespace

void FiniteWatch::record(int64_t obs, const at::Tensor& x) {
  c10::NoGradGuard no_grad;
  obs_.push_back(obs);
  flags_.push_back(finite_sum(x));
}

void FiniteWatch::check(const std::string& what, const at::Tensor& t, const std::string& hint) const {
  if (flags_.empty()) return;
  at::Tensor flags = at::isfinite(at::stack(flags_)).cpu();
  const bool* ok = flags.data_ptr<bool>();
  for (size_t k = 0; k < flags_.size(); ++k) {
    if (ok[k]) continue;
    std::string where = k == 0 ? "at t=" + time_of(t, obs_[k])
                               : "between t=" + time_of(t, obs_[k - 1]) + " and t=" + time_of(t, obs_[k]);
    TORCH_CHECK_VALUE(false, what, " became NaN or Inf ", where, ": ", hint);
  }
}

bool all_finite(const at::Tensor& x) {
  c10::NoGradGuard no_grad;
  return std::isfinite(finite_sum(x).item<double>());
}

std::vector<bool> finite_each(const std::vector<at::Tensor>& xs) {
  c10::NoGradGuard no_grad;
  std::vector<bool> out(xs.size(), true);
  if (xs.empty()) return out;
  std::vector<at::Tensor> flags;
  for (const at::Tensor& x : xs) flags.push_back(finite_sum(x));
  at::Tensor host = at::isfinite(at::stack(flags)).cpu();
  for (size_t i = 0; i < xs.size(); ++i) out[i] = host.data_ptr<bool>()[i];
  return out;
}

void check_outputs_finite(const at::Tensor& ys, const at::Tensor& t) {
  c10::NoGradGuard no_grad;
  const int64_t T = ys.size(0);
  if (ys.numel() == 0 || all_finite(ys)) return;
  // Only on failure: which observation first.
  FiniteWatch rows;
  for (int64_t i = 0; i < T; ++i) rows.record(i, ys[i]);
  rows.check("the solution", t,
             "func(t, y) produced non-finite values; a smaller step (max_step, step_size) or an "
             "adaptive method may help if the dynamics are stiff there");
}

}  // namespace neuralode
