#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "stages.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/nextafter.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "stage_combine.h"

namespace neuralode {

at::Tensor rows_view(const at::Tensor& h, int64_t dim) {
  if (h.dim() == 0) return h;
  std::vector<c10::SymInt> shape(std::max<int64_t>(dim, 1), c10::SymInt(1));
  shape[0] = h.sym_numel();
  return h.reshape_symint(shape);
}

namespace {

// The representable number next to x in `dtype` (the state's), toward `toward`, in x's
// dtype; its derivative w.r.t. x is 1 (torchdiffeq's _nextafter: a shift by one unit in
// the last place does not cut the time gradient).
at::Tensor nudge(const at::Tensor& x, const at::Tensor& toward, at::ScalarType dtype) {
  at::Tensor next;
  {
    c10::NoGradGuard values_only;
    next = at::nextafter(x.detach().to(dtype), toward.detach().to(dtype)).to(x.scalar_type());
  }
  // x + (next - x) is next exactly: the two are adjacent in dtype, so their difference is
  // exact in x's dtype (at least as precise), and so is the sum.
  return x.requires_grad() ? x + (next - x.detach()) : next;
}

}  // namespace

at::Tensor end_time(const Step& step, const at::TensorOptions& t_options) {
  if (step.host_times) return at::scalar_tensor(step.tau_last, t_options);
  return step.t1.defined() ? step.t1 : step.t0 + step.h;
}

at::Tensor stage_time(const Step& step, double c, const at::TensorOptions& t_options) {
  if (step.host_times) {
    const double tau = c == 0.0 ? step.tau_first
                       : c == 1.0 ? step.tau_last
                                  : step.tau0 + c * step.dtau;
    return at::scalar_tensor(tau, t_options);
  }
  if (c == 0.0) {
    return step.perturb ? nudge(step.t0, end_time(step, t_options), step.dt.scalar_type()) : step.t0;
  }
  if (c == 1.0) {
    const at::Tensor t1 = end_time(step, t_options);
    return step.perturb ? nudge(t1, step.t0, step.dt.scalar_type()) : t1;
  }
  return step.t0 + step.h * c;
}

StageLoop::StageLoop(const Tableau& tab, bool differentiable)
    : tab_(tab), differentiable_(differentiable), a_(tab.stages) {
  for (int i = 0; i < tab.stages; ++i) {
    for (int j = 0; j < i; ++j) a_[i].push_back(tab.coupling(i, j));
    b_.push_back(tab.b[i]);
    e_.push_back(tab.e[i]);
  }
}

at::Tensor StageLoop::row_stage_times(const Step& step) const {
  if (!nodes_.defined() || nodes_.scalar_type() != step.t0.scalar_type() || nodes_.device() != step.t0.device()) {
    nodes_ = host_tensor(std::vector<double>(tab_.c.begin(), tab_.c.begin() + tab_.stages), step.t0.options().requires_grad(false))
                 .reshape({tab_.stages, 1, 1});
  }
  // c h, then t0 +: stage_time's two roundings (c = 1 gives t0 + h, end_time, exactly).
  return step.t0.unsqueeze(0) + nodes_ * step.h.unsqueeze(0);
}

at::Tensor by_rows(const at::Tensor& x) {
  const int64_t rows = x.dim() == 0 ? 1 : x.size(0);
  return x.reshape({rows, rows == 0 ? 0 : x.numel() / rows});
}

at::Tensor host_tensor(const std::vector<double>& values, const at::TensorOptions& options) {
  // from_blob only reads here: the copy to `options` is made before it returns.
  return at::from_blob(const_cast<double*>(values.data()), {static_cast<int64_t>(values.size())}, at::kDouble)
      .to(options, /*non_blocking=*/false, /*copy=*/true);
}

at::Tensor host_index(const std::vector<int64_t>& index, const at::Device& device) {
  return at::from_blob(const_cast<int64_t*>(index.data()), {static_cast<int64_t>(index.size())}, at::kLong)
      .to(device, /*non_blocking=*/false, /*copy=*/true);
}

namespace {

// The coefficients c_j w_j of the stages that take part (c_j != 0), with their k.
struct Terms {
  std::vector<at::Tensor> ks;
  std::vector<double> coeffs;
};

Terms terms(const StagePart& part, const std::vector<at::Tensor>& k, const std::vector<double>& c,
            const std::vector<double>& factor) {
  Terms r;
  const size_t n = std::min(k.size(), c.size());
  for (size_t j = 0; j < n; ++j) {
    if (c[j] == 0.0) continue;
    double w = part.negated ? -c[j] : c[j];
    if (part.prescaled) w *= factor[j];
    r.ks.push_back(k[j]);
    r.coeffs.push_back(w);
  }
  return r;
}

std::vector<at::Tensor> detached(const std::vector<at::Tensor>& k) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& x : k) out.push_back(x.detach());
  return out;
}

std::optional<at::Tensor> weight(const StagePart& part, const at::Tensor& dt) {
  if (part.prescaled || !dt.defined()) return std::nullopt;
  return dt;
}

}  // namespace

at::Tensor StageLoop::combine(const StagePart& part, const std::vector<at::Tensor>& k,
                              const std::vector<double>& c, const std::vector<double>& factor,
                              const at::Tensor& dt) const {
  Terms t = terms(part, k, c, factor);
  if (t.ks.empty()) return part.x;
  // Below autograd when nothing is differentiated: the autograd kernel of the op
  // costs a few microseconds per call in the hot loop.
  if (differentiable_) return stage_combine(part.x, t.ks, t.coeffs, weight(part, dt));
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return stage_combine(part.x, t.ks, t.coeffs, weight(part, dt));
}

std::pair<std::vector<double>, std::vector<double>> StageLoop::part_weights(
    const StagePart& part, const std::vector<double>& factor) const {
  std::vector<double> b(b_.size()), e(e_.size());
  for (size_t j = 0; j < b.size(); ++j) {
    const double w = (part.negated ? -1.0 : 1.0) * (part.prescaled ? factor[j] : 1.0);
    b[j] = b_[j] * w;
    e[j] = e_[j] * w;
  }
  return {b, e};
}

std::pair<at::Tensor, std::vector<double>> StageLoop::finish_rows(const Step& step, const StagePart& part,
                                                                  const std::vector<at::Tensor>& k,
                                                                  const std::vector<double>& factor,
                                                                  const StepPlan& plan) const {
  const auto [b, e] = part_weights(part, factor);
  const std::optional<at::Tensor> dt = weight(part, step.dt);
  at::Tensor x1, sums;
  if (differentiable_) {
    std::tie(x1, sums) = rk_solution_error_rows(part.x, k, b, e, dt, plan.rtol, plan.atol);
  } else {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(x1, sums) = rk_solution_error_rows(part.x, k, b, e, dt, plan.rtol, plan.atol);
  }
  const int64_t rows = part.x.size(0);
  const int64_t per_row = rows > 0 ? part.x.numel() / rows : 0;
  // One host read of the sums; the RMS on the host (a row without elements has no
  // error: its mean would be 0/0).
  const at::Tensor host = sums.to(at::kDouble).cpu().contiguous();
  std::vector<double> ratios(host.data_ptr<double>(), host.data_ptr<double>() + rows);
  if (per_row > 0) {
    for (double& r : ratios) r = std::sqrt(r / static_cast<double>(per_row));
  }
  return {x1, std::move(ratios)};
}

std::pair<at::Tensor, PartError> StageLoop::finish(const Step& step, const StagePart& part,
                                                   const std::vector<at::Tensor>& k,
                                                   const std::vector<double>& factor,
                                                   const StepPlan& plan) const {
  if (!tab_.adaptive) return {combine(part, k, b_, factor, step.dt), PartError{}};
  // Every weight is passed (the kernel reads each k once for both sums).
  const auto [b, e] = part_weights(part, factor);
  const std::optional<at::Tensor> dt = weight(part, step.dt);
  PartError error;
  if (plan.norm) {
    // A user's norm needs the scaled error itself: err = sum_j e_j w_j k_j with the
    // kernels' rule that an element without error counts 0 (also where its scale is 0).
    at::Tensor x1 = std::get<0>(rk_solution_error(part.x, k, b, e, dt, plan.rtol, plan.atol));
    c10::NoGradGuard control_only;  // the error picks step sizes, it is not differentiated
    const at::Tensor x = part.x.detach();
    const at::Tensor err = stage_combine(at::zeros_like(x), detached(k), e, dt ? std::optional<at::Tensor>(dt->detach()) : std::nullopt);
    const at::Tensor scale = plan.atol + plan.rtol * at::maximum(x.abs(), x1.detach().abs());
    error.scaled = (err / scale).masked_fill(err == 0, 0);
    return {x1, error};
  }
  if (plan.segments.size() <= 1) {
    auto [x1, sum_sq] = rk_solution_error(part.x, k, b, e, dt, plan.rtol, plan.atol);
    error.add(sum_sq, part.x.numel());
    return {x1, error};
  }
  // A flat tuple state: one kernel call per piece on views of the buffers (no copy
  // in), so that each piece has its own RMS; the pieces' ends joined once.
  std::vector<at::Tensor> pieces;
  int64_t offset = 0;
  for (int64_t n : plan.segments) {
    std::vector<at::Tensor> k_piece;
    for (const at::Tensor& kj : k) k_piece.push_back(kj.narrow(0, offset, n));
    auto piece_tol = [&](const at::Tensor& tol) { return tol.numel() > 1 ? tol.narrow(0, offset, n) : tol; };
    auto [x1, sum_sq] = rk_solution_error(part.x.narrow(0, offset, n), k_piece, b, e, dt,
                                          piece_tol(plan.rtol), piece_tol(plan.atol));
    pieces.push_back(std::move(x1));
    error.add(sum_sq, n);
    offset += n;
  }
  return {at::cat(pieces), error};
}

}  // namespace neuralode
