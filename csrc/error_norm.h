// The norm that step-size control takes of a step's scaled error
//     q = err / (atol + rtol * max(|y0|, |y1|)),
// as a StepPlan asks for it (see StepPlan::segments and StepPlan::norm).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "spec.h"

namespace neuralode {

// The error pieces of one finished part of a state: the sum of q^2 over each segment
// (float64 0-d tensors) and its element count (the mean is taken on the host: no op per
// step for it), or, when the plan has a user's norm, q itself.
struct PartError {
  std::vector<at::Tensor> sum_sq;
  std::vector<int64_t> count;
  at::Tensor scaled;

  void add(at::Tensor sum, int64_t n) {
    sum_sq.push_back(std::move(sum));
    count.push_back(n);
  }
};

// The error ratio of a step from its parts' errors: the user's norm of the scaled
// tensors (in part order), else the largest RMS over all segments of all parts.
double error_ratio(const StepPlan& plan, const std::vector<PartError>& parts);

// The norm of one scaled tensor laid out like the state (the first-step choice):
// the user's norm when the plan has one for it, else the segments' largest RMS.
double state_norm(const StepPlan& plan, const at::Tensor& q);

// Mean squares of q per segment of the plan (one piece when it has none).
std::vector<at::Tensor> segment_mean_sq(const StepPlan& plan, const at::Tensor& q);

}  // namespace neuralode
