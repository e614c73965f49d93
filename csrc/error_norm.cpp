#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "error_norm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/stack.h>

#include <algorithm>
#include <cmath>

namespace neuralode {

std::vector<at::Tensor> segment_mean_sq(const StepPlan& plan, const at::Tensor& q) {
  const at::Tensor sq = q.pow(2);  // in q's dtype, as torchdiffeq's norms
  if (plan.segments.size() <= 1) return {sq.numel() > 0 ? sq.mean() : sq.sum()};
  std::vector<at::Tensor> out;
  const at::Tensor flat = sq.reshape({-1});
  int64_t offset = 0;
  for (int64_t n : plan.segments) {
    // An empty piece has no error (its mean would be NaN).
    out.push_back(n > 0 ? flat.narrow(0, offset, n).mean() : flat.narrow(0, offset, 0).sum());
    offset += n;
  }
  return out;
}

double error_ratio(const StepPlan& plan, const std::vector<PartError>& parts) {
  if (plan.norm) {
    std::vector<at::Tensor> scaled;
    for (const PartError& p : parts) scaled.push_back(p.scaled);
    return plan.norm(scaled);
  }
  std::vector<at::Tensor> sums;
  std::vector<int64_t> counts;
  for (const PartError& p : parts) {
    sums.insert(sums.end(), p.sum_sq.begin(), p.sum_sq.end());
    counts.insert(counts.end(), p.count.begin(), p.count.end());
  }
  if (sums.empty()) return 0.0;
  if (sums.size() == 1) {
    return std::sqrt(sums[0].item<double>() / static_cast<double>(std::max<int64_t>(counts[0], 1)));
  }
  // One read to the host for the whole step (each .item() would synchronize a device).
  const at::Tensor host = at::stack(sums).to(at::kDouble).cpu();
  const double* v = host.data_ptr<double>();
  double worst = 0.0;
  for (size_t i = 0; i < sums.size(); ++i) {
    worst = std::max(worst, v[i] / static_cast<double>(std::max<int64_t>(counts[i], 1)));
  }
  return std::sqrt(worst);
}

double state_norm(const StepPlan& plan, const at::Tensor& q) {
  if (plan.norm && plan.norm_first_step) return plan.norm({q});
  std::vector<at::Tensor> pieces = segment_mean_sq(plan, q);
  return (pieces.size() == 1 ? pieces[0] : at::stack(pieces).max()).sqrt().item<double>();
}

}  // namespace neuralode
