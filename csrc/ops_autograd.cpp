// Autograd formulas of the library's ops, registered for the Autograd dispatch key.
//
// They live in C++ rather than in Python (torch.library.register_autograd) because the
// backprop ("RK-Net") solves call these ops once or more per step: a Python autograd
// formula costs a trip into the interpreter in the forward (setup_context) and in the
// backward of every step, which made fixed-step backprop on small states about 1.8x
// slower than plain aten ops. The formulas are written with differentiable ops, so
// double backward works.
//
// Maths: y = y0 + dt * sum_j c_j k_j, with dt one value, one per row of y0, or absent
// (dt = 1). With g = dL/dy:
//   dL/dy0 = g,   dL/dk_j = c_j * dt * g,   dL/ddt = sum over the row of g * sum_j c_j k_j.
// rk_solution_error's (and rk_solution_error_rows') y1 is stage_combine with the weights b; its error sums are not
// differentiable (it only steers the step size).
#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "stage_combine.h"
#include "stages.h"

namespace neuralode {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Gradients of y = y0 + dt * sum_j c_j k_j in the order of the forward's arguments:
// {dL/dy0, dL/dk_0..n-1, `weight_lists` undefined ones (the coefficient lists),
// dL/ddt (undefined when there is no dt or it needs none)}.
variable_list combine_backward(AutogradContext* ctx, const at::Tensor& grad, int weight_lists) {
  const auto coeffs = ctx->saved_data["coeffs"].toDoubleVector();
  const bool has_dt = ctx->saved_data["has_dt"].toBool();
  const size_t n = coeffs.size();
  variable_list saved = ctx->get_saved_variables();
  at::Tensor dt = has_dt ? saved[0] : at::Tensor();
  const at::Tensor scaled = has_dt ? grad * rows_view(dt, grad.dim()) : grad;

  variable_list grads;
  grads.reserve(n + weight_lists + 2);
  grads.push_back(grad);
  for (size_t j = 0; j < n; ++j) grads.push_back(scaled * coeffs[j]);
  grads.resize(grads.size() + weight_lists);
  at::Tensor grad_dt;
  if (has_dt && ctx->needs_input_grad(n + 1)) {
    std::vector<at::Tensor> ks(saved.begin() + 1, saved.end());
    const at::Tensor increment = stage_combine(at::zeros_like(ks[0]), ks, coeffs, std::nullopt);
    const at::Tensor prod = grad * increment;
    // One sum per value of dt (a single value: the sum over everything); sum_to also
    // serves an empty batch, where a reshape to (rows, -1) would be ambiguous.
    grad_dt = at::sum_to(prod, rows_view(dt, prod.dim()).sym_sizes()).reshape_symint(dt.sym_sizes());
  }
  grads.push_back(grad_dt);
  return grads;
}

// What the backward needs: dt, and the ks only when dt needs a gradient.
void save_for_combine_backward(AutogradContext* ctx, at::TensorList ks, at::ArrayRef<double> coeffs,
                               const std::optional<at::Tensor>& dt) {
  const bool has_dt = dt.has_value() && dt->defined();
  ctx->saved_data["coeffs"] = coeffs.vec();
  ctx->saved_data["has_dt"] = has_dt;
  variable_list to_save;
  if (has_dt) {
    to_save.push_back(*dt);
    if (dt->requires_grad()) to_save.insert(to_save.end(), ks.begin(), ks.end());
  }
  ctx->save_for_backward(to_save);
}

class StageCombineFunction : public torch::autograd::Function<StageCombineFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y0, at::TensorList ks,
                            const std::vector<double>& coeffs, const std::optional<at::Tensor>& dt) {
    save_for_combine_backward(ctx, ks, coeffs, dt);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return stage_combine(y0, ks, coeffs, dt);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return combine_backward(ctx, grad_outputs[0], /*weight_lists=*/1);  // coeffs
  }
};

// kRows: rk_solution_error_rows (the error sums per row), else rk_solution_error.
template <bool kRows>
class SolutionErrorFunction : public torch::autograd::Function<SolutionErrorFunction<kRows>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& y0, at::TensorList ks,
                               const std::vector<double>& b, const std::vector<double>& e,
                               const std::optional<at::Tensor>& dt, const at::Tensor& rtol,
                               const at::Tensor& atol) {
    save_for_combine_backward(ctx, ks, b, dt);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y1, sum_sq] = kRows ? rk_solution_error_rows(y0, ks, b, e, dt, rtol, atol)
                              : rk_solution_error(y0, ks, b, e, dt, rtol, atol);
    ctx->mark_non_differentiable({sum_sq});
    return {y1, sum_sq};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list g = combine_backward(ctx, grad_outputs[0], /*weight_lists=*/2);  // b, e
    g.resize(g.size() + 2);  // rtol, atol: they steer the step only
    return g;
  }
};

at::Tensor stage_combine_autograd(const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> coeffs,
                                  const std::optional<at::Tensor>& dt) {
  return StageCombineFunction::apply(y0, ks, coeffs.vec(), dt);
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error_autograd(
    const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> b, at::ArrayRef<double> e,
    const std::optional<at::Tensor>& dt, const at::Tensor& rtol, const at::Tensor& atol) {
  variable_list out = SolutionErrorFunction<false>::apply(y0, ks, b.vec(), e.vec(), dt, rtol, atol);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error_rows_autograd(
    const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> b, at::ArrayRef<double> e,
    const std::optional<at::Tensor>& dt, const at::Tensor& rtol, const at::Tensor& atol) {
  variable_list out = SolutionErrorFunction<true>::apply(y0, ks, b.vec(), e.vec(), dt, rtol, atol);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralode, Autograd, m) {
  m.impl("stage_combine", &stage_combine_autograd);
  m.impl("rk_solution_error", &rk_solution_error_autograd);
  m.impl("rk_solution_error_rows", &rk_solution_error_rows_autograd);
}

}  // namespace neuralode
