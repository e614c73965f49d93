// The integration loops: the forward solve through all observation times and
// the augmented-adjoint solve backwards through all of them in one pass.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "dynamics.h"
#include "tableau.h"

namespace neuralode {

// How a fixed-step solver places its steps.
struct StepSpec {
  enum class Kind {
    // Each interval [t_i, t_{i+1}] is cut into n_i = ceil(max|t_{i+1} - t_i| / value)
    // equal steps (the reference's rule; value = inf gives one step per interval).
    kSubdivide,
    // A uniform grid t_0, t_0 + value, ... that ends at t_{T-1}, independent of
    // the observation times; outputs between grid points are interpolated
    // linearly (torchdiffeq's step_size).
    kUniform,
  };
  Kind kind = Kind::kSubdivide;
  double value = 0.0;
  int64_t max_num_steps = 0;
};

struct ForwardResult {
  at::Tensor ys;  // (T, *y0.shape)
  SolveStats stats;
};

// Integrates dz/dt = f(t, z) from y0 through the observation times t (1-D (T,)
// or per-sample (T, batch, 1)) and returns z at each. With `differentiable`
// every op is recorded by autograd (backprop through the solver).
ForwardResult solve_forward(Dynamics& f, const at::Tensor& y0, const at::Tensor& t,
                            const Tableau& tableau, const StepSpec& spec, bool differentiable);

struct AdjointResult {
  at::Tensor grad_y0;
  at::Tensor grad_t;  // undefined when not requested
  std::vector<at::Tensor> grad_params;
  SolveStats stats;
};

// The continuous adjoint (Chen et al. 2018, Algorithm 1) for the loss gradients
// grad_ys = dL/dz(t_i): integrates z, a = dL/dz, dL/dt and dL/dtheta backwards
// from t_{T-1} to t_0 in one pass, jumping a += dL/dz(t_i) at each observation.
AdjointResult solve_adjoint(Dynamics& f, const at::Tensor& t, const at::Tensor& ys,
                            const at::Tensor& grad_ys, const Tableau& tableau,
                            const StepSpec& spec, bool need_t);

}  // namespace neuralode
