// Adaptive Runge-Kutta loops: the forward solve with error control and dense
// output, the continuous adjoint backwards with error control on (z, a), and the
// checkpointed discrete adjoint. Times are 1-D; the state has any shape.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "dynamics.h"
#include "tableau.h"

namespace neuralode {

// Step-size control of one solve (torchdiffeq's defaults).
struct StepControl {
  at::Tensor rtol, atol;  // state dtype and device; one value or one per element
  double safety = 0.9, ifactor = 10.0, dfactor = 0.2;
  // PI controller (Gustafsson): factor = safety * r^(-beta1/p) * r_prev^(beta2/p);
  // off: the I controller factor = safety * r^(-1/p).
  bool pi = false;
  double beta1 = 0.7, beta2 = 0.4;
  double first_step = 0.0;  // 0: Hairer's automatic choice
  double min_step = 0.0;
  double max_step = std::numeric_limits<double>::infinity();
  int64_t max_num_steps = std::numeric_limits<int32_t>::max();
  std::vector<double> step_t;  // times every step must land on exactly
};

// An accepted step as the checkpointed adjoint replays it.
struct StepRecord {
  double t0, h;
  double t_first, t_stage_end;  // where k_0 and the c = 1 stages sample f
  at::Tensor z0;
  std::vector<std::pair<int64_t, double>> obs;  // (observation index, theta in (0, 1])
};

struct AdaptiveForwardResult {
  at::Tensor ys;
  SolveStats stats;
  std::vector<StepRecord> steps;  // filled when recording
};

AdaptiveForwardResult solve_adaptive_forward(Dynamics& f, const at::Tensor& y0,
                                             const at::Tensor& t, const Tableau& tab,
                                             const StepControl& control, bool differentiable,
                                             bool record);

struct AdaptiveAdjointResult {
  at::Tensor grad_y0, grad_t;
  std::vector<at::Tensor> grad_params;
  SolveStats stats;
};

// The continuous adjoint: [z, a] solved backwards with error control (the
// parameter adjoint accumulated outside the state; with `seminorm` it is also
// left out of the error norm), one pass over all observation times.
AdaptiveAdjointResult solve_adaptive_adjoint(Dynamics& f, const at::Tensor& t,
                                             const at::Tensor& ys, const at::Tensor& grad_ys,
                                             const Tableau& tab, const StepControl& control,
                                             bool seminorm, bool need_t);

// The discrete adjoint of a recorded forward solve: replays each accepted step
// with autograd, last first, and backpropagates through it alone.
AdaptiveAdjointResult solve_checkpoint_adjoint(Dynamics& f, const at::Tensor& grad_ys,
                                               const std::vector<StepRecord>& steps,
                                               const Tableau& tab, const at::Tensor& t);

}  // namespace neuralode
