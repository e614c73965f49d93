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

  // Fixed-step methods: where the steps go.
  //   kSubdivide    each interval [t_i, t_{i+1}] cut into n_i = ceil(max|t_{i+1} - t_i| / step)
  //                 equal steps (the reference's rule; step = inf: one step per interval);
  //   kUniform      the grid t_0 + k * step, its last point replaced by t_{T-1}
  //                 (torchdiffeq's step_size);
  //   kConstructed  the grid grid_constructor(t) (torchdiffeq's grid_constructor).
  // On a grid the steps go from grid point to grid point and the observations between
  // them are interpolated (`interp`).
  enum class Grid { kSubdivide, kUniform, kConstructed };
  Grid grid = Grid::kSubdivide;
  double step = 0.0;
  // kConstructed: the grid of times t (1-D, from t_0 to t_{T-1}, strictly monotonic,
  // checked by its maker). Called on the thread of the solve; may carry a graph to t.
  std::function<at::Tensor(const at::Tensor&)> grid_constructor;
  // Output between grid points: linear, or cubic Hermite with f at both ends.
  enum class Interp { kLinear, kCubic };
  Interp interp = Interp::kLinear;
  // torchdiffeq's perturb: stage 0 samples f at nextafter(t0, t1) and the c = 1 stages at
  // nextafter(t1, t0) (in the state's dtype), so that f jumping at a grid point is seen
  // from inside each step.
  bool perturb = false;

  // Adaptive methods: error control and the step-size controller.
  at::Tensor rtol, atol;  // the state's dtype and device; one value or one per element
  bool atol_has_zero = false;  // some element has atol = 0 (its scale may be 0)
  double safety = 0.0, ifactor = 0.0, dfactor = 0.0;
  // kI: the I controller, factor = safety * r^(-1/p); kPI: Gustafsson's PI controller,
  // factor = safety * r^(-beta1/p) * r_prev^(beta2/p); kPredictive: the I controller
  // capped by Gustafsson's predictive rule after accepted steps (controller.h).
  enum class Controller { kI, kPI, kPredictive };
  Controller controller = Controller::kI;
  double beta1 = 0.0, beta2 = 0.0;
  double first_step = 0.0;  // 0: Hairer's automatic choice
  double min_step = 0.0, max_step = 0.0;
  // Knots: times the steps land on. step_t: f is taken as continuous there (the landing
  // step's last stage, sampled just before the knot, is the next step's first: FSAL).
  // jump_t: f may jump there (f is evaluated again just past the knot). torchdiffeq's.
  std::vector<double> step_t, jump_t;

  // The error norm of step-size control (and of the first-step choice when
  // `norm_first_step`). Default: the RMS of each part of the state, the largest over
  // parts. `segments`: the element counts of a flat state's pieces (a tuple state,
  // flattened in order): the RMS of each piece, the largest over pieces (torchdiffeq's
  // mixed norm). `norm`: a user's norm of the scaled errors err / (atol + rtol
  // max(|y0|, |y1|)), one tensor per part (the error is then materialized).
  std::vector<int64_t> segments;
  std::function<double(const std::vector<at::Tensor>&)> norm;
  bool norm_first_step = true;

  // Adaptive: the most step attempts (accepted and rejected) between two observations,
  // as torchdiffeq counts them. Fixed: the most steps of the whole solve.
  int64_t max_num_steps = 0;

  // Adaptive: each sample (the first dimension of the state) steps on its own: its own
  // step size, error ratio and accept/reject, observed at its own times.
  bool per_sample = false;

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
