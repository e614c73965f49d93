// The stage-combination op, y = y0 + dt * sum_j c_j k_j, shared declarations.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <tuple>
#include <utility>

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

// Validated, contiguous operands of one rk_solution_error call.
struct SolutionErrorOperands {
  StageCombineOperands combine;  // y0, the ks with the b weights, dt
  at::Tensor rtol;               // one value, or one per element of y0
  at::Tensor atol;
};

// The checks every backend of rk_solution_error shares: one e weight per b weight,
// the stage_combine checks, and the tolerances' dtype, device and size (errors name
// the argument).
SolutionErrorOperands check_rk_solution_error(const at::Tensor& y0, at::TensorList ks,
                                              at::ArrayRef<double> b, at::ArrayRef<double> e,
                                              const std::optional<at::Tensor>& dt,
                                              const at::Tensor& rtol, const at::Tensor& atol);

at::Tensor stage_combine_cpu(const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> coeffs,
                             const std::optional<at::Tensor>& dt);

std::tuple<at::Tensor, at::Tensor> rk_solution_error_cpu(
    const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> b, at::ArrayRef<double> e,
    const std::optional<at::Tensor>& dt, const at::Tensor& rtol, const at::Tensor& atol);

std::tuple<at::Tensor, at::Tensor> rk_solution_error_rows_cpu(
    const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> b, at::ArrayRef<double> e,
    const std::optional<at::Tensor>& dt, const at::Tensor& rtol, const at::Tensor& atol);

// Calls rk_solution_error_rows through the dispatcher: (y1, the sums per row of y0).
std::tuple<at::Tensor, at::Tensor> rk_solution_error_rows(const at::Tensor& y0, at::TensorList ks,
                                                          at::ArrayRef<double> b, at::ArrayRef<double> e,
                                                          const std::optional<at::Tensor>& dt,
                                                          const at::Tensor& rtol, const at::Tensor& atol);

// Calls rk_solution_error through the dispatcher: (y1, sum of squared scaled errors).
std::tuple<at::Tensor, at::Tensor> rk_solution_error(const at::Tensor& y0, at::TensorList ks,
                                                     at::ArrayRef<double> b, at::ArrayRef<double> e,
                                                     const std::optional<at::Tensor>& dt,
                                                     const at::Tensor& rtol, const at::Tensor& atol);

// Calls the op through the dispatcher (autograd included: backprop mode).
at::Tensor stage_combine(const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> coeffs,
                         const std::optional<at::Tensor>& dt);

}  // namespace neuralode
