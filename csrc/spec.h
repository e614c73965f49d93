// What a solve is asked to do: the method and step planning of each direction
// and the gradient mode. Built once per call of odeint (neuralode/spec.py holds
// every default; this struct has none of its own) and read-only from then on.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tableau.h"

namespace neuralode {

// How one direction of a solve places its steps.
struct StepPlan {
  const Tableau* tableau = nullptr;

  // Fixed-step methods. kSubdivide: each interval [t_i, t_{i+1}] is cut into
  // n_i = ceil(max|t_{i+1} - t_i| / step) equal steps (the reference's rule;
  // step = inf: one step per interval). kUniform: a grid t_0 + k * step ending at
  // t_{T-1}, outputs between grid points interpolated linearly (torchdiffeq's
  // step_size).
  enum class Grid { kSubdivide, kUniform };
  Grid grid = Grid::kSubdivide;
  double step = 0.0;

  // Adaptive methods: error control and the step-size controller.
  at::Tensor rtol, atol;  // the state's dtype and device; one value or one per element
  bool atol_has_zero = false;  // some element has atol = 0 (its scale may be 0)
  double safety = 0.0, ifactor = 0.0, dfactor = 0.0;
  // PI controller (Gustafsson): factor = safety * r^(-beta1/p) * r_prev^(beta2/p);
  // off: the I controller factor = safety * r^(-1/p).
  bool pi = false;
  double beta1 = 0.0, beta2 = 0.0;
  double first_step = 0.0;  // 0: Hairer's automatic choice
  double min_step = 0.0, max_step = 0.0;
  std::vector<double> step_t;  // knots: times every step lands on (f may jump there)

  // The error norm of step-size control (and of the first-step choice when
  // `norm_first_step`). Default: the RMS of each part of the state, the largest over
  // parts. `segments`: the element counts of a flat state's pieces (a tuple state,
  // flattened in order): the RMS of each piece, the largest over pieces (torchdiffeq's
  // mixed norm). `norm`: a user's norm of the scaled errors err / (atol + rtol
  // max(|y0|, |y1|)), one tensor per part (the error is then materialized).
  std::vector<int64_t> segments;
  std::function<double(const std::vector<at::Tensor>&)> norm;
  bool norm_first_step = true;

  // Both: the most steps (accepted and rejected) one solve may take.
  int64_t max_num_steps = 0;

  bool adaptive() const { return tableau->adaptive; }
};

struct SolveSpec {
  enum class Gradient { kBackprop, kAdjoint, kCheckpoint };
  StepPlan forward;
  StepPlan backward;  // the continuous adjoint's (gradient kAdjoint)
  Gradient gradient = Gradient::kBackprop;
  bool seminorm = false;  // adjoint: leave dL/dtheta out of the error norm
};

}  // namespace neuralode
