// All op schemas of the library in one place, plus the CPU registrations and
// the checks every backend shares. Each CUDA registration lives next to its
// kernel (cuda/stage_combine_cuda.cu, cuda/solution_error_cuda.cu), the autograd
// formulas are in ops_autograd.cpp (C++), the fake (meta) kernels in
// neuralode/_ops.py.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "stage_combine.h"
#include "stage_math.h"

namespace neuralode {

StageCombineOperands check_stage_combine(const at::Tensor& y0, at::TensorList ks,
                                         at::ArrayRef<double> coeffs,
                                         const std::optional<at::Tensor>& dt) {
  TORCH_CHECK(y0.scalar_type() == at::kFloat || y0.scalar_type() == at::kDouble,
              "stage_combine: y0 must be float32 or float64, got ", y0.scalar_type());
  TORCH_CHECK(ks.size() == coeffs.size(), "stage_combine: got ", ks.size(),
              " stage derivatives ks but ", coeffs.size(), " coeffs; pass one coefficient per k");
  TORCH_CHECK(static_cast<int64_t>(ks.size()) <= math::kMaxStages,
              "stage_combine: at most ", math::kMaxStages, " stage derivatives, got ", ks.size());
  StageCombineOperands ops;
  ops.y0 = y0.contiguous();
  ops.ks.reserve(ks.size());
  for (size_t j = 0; j < ks.size(); ++j) {
    const at::Tensor& k = ks[j];
    TORCH_CHECK(k.sizes() == y0.sizes(), "stage_combine: ks[", j, "] has shape ", k.sizes(),
                " but y0 has shape ", y0.sizes(), "; every stage derivative must match y0");
    TORCH_CHECK(k.scalar_type() == y0.scalar_type(), "stage_combine: ks[", j, "] is ",
                k.scalar_type(), " but y0 is ", y0.scalar_type());
    TORCH_CHECK(k.device() == y0.device(), "stage_combine: ks[", j, "] is on ", k.device(),
                " but y0 is on ", y0.device());
    ops.ks.push_back(k.contiguous());
  }
  ops.rows = 1;
  if (dt.has_value()) {
    const at::Tensor& h = *dt;
    TORCH_CHECK(h.scalar_type() == y0.scalar_type(), "stage_combine: dt is ", h.scalar_type(),
                " but y0 is ", y0.scalar_type(), "; convert dt to the state's dtype");
    TORCH_CHECK(h.device() == y0.device(), "stage_combine: dt is on ", h.device(),
                " but y0 is on ", y0.device());
    const int64_t n = h.numel();
    TORCH_CHECK(n == 1 || (y0.dim() > 0 && n == y0.size(0)),
                "stage_combine: dt must hold one value or one per row of y0 (", 
                y0.dim() > 0 ? y0.size(0) : 1, "), got ", n, " values");
    ops.rows = n;
    ops.dt = h.contiguous();
  }
  ops.inner = ops.rows > 0 ? y0.numel() / ops.rows : 0;
  return ops;
}

at::Tensor stage_combine(const at::Tensor& y0, at::TensorList ks, at::ArrayRef<double> coeffs,
                         const std::optional<at::Tensor>& dt) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralode::stage_combine", "")
                       .typed<at::Tensor(const at::Tensor&, at::TensorList, at::ArrayRef<double>,
                                         const std::optional<at::Tensor>&)>();
  return op.call(y0, ks, coeffs, dt);
}

SolutionErrorOperands check_rk_solution_error(const at::Tensor& y0, at::TensorList ks,
                                              at::ArrayRef<double> b, at::ArrayRef<double> e,
                                              const std::optional<at::Tensor>& dt,
                                              const at::Tensor& rtol, const at::Tensor& atol) {
  TORCH_CHECK(b.size() == e.size(), "rk_solution_error: b has ", b.size(), " weights but e has ",
              e.size());
  SolutionErrorOperands ops{check_stage_combine(y0, ks, b, dt), at::Tensor(), at::Tensor()};
  const at::Tensor& state = ops.combine.y0;
  auto check = [&](const at::Tensor& tol, const char* name) {
    TORCH_CHECK(tol.scalar_type() == state.scalar_type(), "rk_solution_error: ", name, " is ",
                tol.scalar_type(), " but y0 is ", state.scalar_type());
    TORCH_CHECK(tol.device() == state.device(), "rk_solution_error: ", name, " is on ", tol.device(),
                " but y0 is on ", state.device());
    TORCH_CHECK(tol.numel() == 1 || tol.numel() == state.numel(), "rk_solution_error: ", name,
                " must hold one value or one per element of y0 (", state.numel(), "), got ",
                tol.numel());
    return tol.contiguous();
  };
  ops.rtol = check(rtol, "rtol");
  ops.atol = check(atol, "atol");
  return ops;
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error(const at::Tensor& y0, at::TensorList ks,
                                                     at::ArrayRef<double> b, at::ArrayRef<double> e,
                                                     const std::optional<at::Tensor>& dt,
                                                     const at::Tensor& rtol, const at::Tensor& atol) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralode::rk_solution_error", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, at::TensorList, at::ArrayRef<double>,
                           at::ArrayRef<double>, const std::optional<at::Tensor>&,
                           const at::Tensor&, const at::Tensor&)>();
  return op.call(y0, ks, b, e, dt, rtol, atol);
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error_rows(const at::Tensor& y0, at::TensorList ks,
                                                          at::ArrayRef<double> b, at::ArrayRef<double> e,
                                                          const std::optional<at::Tensor>& dt,
                                                          const at::Tensor& rtol, const at::Tensor& atol) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralode::rk_solution_error_rows", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, at::TensorList, at::ArrayRef<double>,
                           at::ArrayRef<double>, const std::optional<at::Tensor>&,
                           const at::Tensor&, const at::Tensor&)>();
  return op.call(y0, ks, b, e, dt, rtol, atol);
}

TORCH_LIBRARY(neuralode, m) {
  // y = y0 + dt * sum_j coeffs[j] * ks[j]; dt holds one value, one per row of
  // y0 (per-sample steps), or is None (dt = 1).
  m.def("stage_combine(Tensor y0, Tensor[] ks, float[] coeffs, Tensor? dt) -> Tensor");
  // The end of an adaptive step in one pass: y1 = y0 + dt * sum_j b[j] * ks[j] and
  // the sum over elements of (err / (atol + rtol * max(|y0|, |y1|)))^2 with
  // err = dt * sum_j e[j] * ks[j] (a float64 scalar; the RMS error ratio is
  // sqrt(sum / numel)). rtol, atol: one value or one per element of y0.
  m.def(
      "rk_solution_error(Tensor y0, Tensor[] ks, float[] b, float[] e, Tensor? dt, Tensor rtol, "
      "Tensor atol) -> (Tensor, Tensor)");
  // The same with the sum per row of y0 (the first dimension: per-sample steps): a
  // float64 tensor (rows,); each row's RMS error ratio is sqrt(sum / elements per row).
  m.def(
      "rk_solution_error_rows(Tensor y0, Tensor[] ks, float[] b, float[] e, Tensor? dt, Tensor rtol, "
      "Tensor atol) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(neuralode, CPU, m) {
  m.impl("stage_combine", &stage_combine_cpu);
  m.impl("rk_solution_error", &rk_solution_error_cpu);
  m.impl("rk_solution_error_rows", &rk_solution_error_rows_cpu);
}

}  // namespace neuralode
