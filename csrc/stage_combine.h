// The stage-combination op, y = y0 + dt * sum_j c_j k_j, shared declarations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

namespace neuralode {

// Validated, contiguous operands of one stage_combine call.
struct StageCombineOperands {
  at::Tensor y0;
  std::vector<at::Tensor> ks;
  std::optional<at::Tensor> dt;  // absent: dt = 1
  int64_t rows;                  // dt has one value per row (rows > 1) or one in all
  int64_t inner;                 // elements per row
};

// Checks shapes, dtypes and devices (errors name the argument) and makes every
// operand contiguous.
StageCombineOperands check_stage_combine(const at::Tensor& y0, at::TensorList ks,
                                         at::ArrayRef<double> coeffs,
                                         const std::optional<at::Tensor>& dt);

at::Tensor stage_combine_cpu(const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> coeffs,
                             const std::optional<at::Tensor>& dt);

// Calls the op through the dispatcher (autograd included: backprop mode).
at::Tensor stage_combine(const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> coeffs,
                         const std::optional<at::Tensor>& dt);

}  // namespace neuralode
