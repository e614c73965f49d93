// One step of a solve as the planner hands it to the stepped system: where it
// starts, how long it is, where its stages sample f, and which observations it
// serves.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace neuralode {

// An observation of one sample served inside a per-sample step: row `row`'s output
// `obs` at theta = (t[obs, row] - t0_row) / h_row of that row's step.
struct SampleObs {
  int64_t row, obs;
  double theta;
};

struct Step {
  // The planner's clock (host doubles): the solve's own time for 1-D times, the
  // normalized time s for per-sample times (see Clock). NaN for fixed steps, whose
  // times exist only as tensors (they may carry a graph back to t).
  double tau0 = 0.0, dtau = 0.0;
  // Where stage 0 and the c = 1 stages sample f: tau0 and tau0 + dtau, except next
  // to a knot (a time where f may jump), where they sit just inside the step.
  double tau_first = 0.0, tau_last = 0.0;
  // Stage times from the host clock (1-D adaptive: one scalar per stage), or from
  // t0 + c * h (tensors).
  bool host_times = false;

  at::Tensor t0, h;  // start and size in time: 0-d, or per sample (batch, 1)
  at::Tensor dt;     // h in the state's dtype (what the stage combinations take)
  // The end in time where it is a time of its own (fixed steps: a grid point or an
  // observation, not t0 + h rounded); undefined: t0 + h.
  at::Tensor t1;
  // Fixed steps with torchdiffeq's perturb: stage 0 at nextafter(t0, t1), the c = 1
  // stages at nextafter(t1, t0), in the state's dtype.
  bool perturb = false;

  int64_t end_obs = -1;         // the observation the step ends on, or -1
  std::vector<int64_t> inner;   // observations strictly inside, served by interpolation
  int64_t tape_index = -1;      // replay: which recorded step this is

  // Per-sample steps (each sample its own size and accept/reject): the system computes
  // one error ratio per row (`row_errors`); the planner's verdict per row is `accept_rows`
  // (bool, one per row, on the state's device: the rows that move to the step's end;
  // undefined when every row moves, a finished row's step being of size 0),
  // `row_h` the rows' (signed) step sizes on the host, `sample_obs` the rows' observations
  // inside their steps.
  bool row_errors = false;
  at::Tensor accept_rows;
  bool mixed = false;  // some row that tried the step was rejected (others accepted)
  std::vector<double> row_h;
  std::vector<SampleObs> sample_obs;
};

// The time of a stage with node c (0 <= c <= 1) of `step`, as f receives it.
at::Tensor stage_time(const Step& step, double c, const at::TensorOptions& t_options);

// The step's end as f receives it outside the stages (f at the end for interpolation):
// tau_last on the host clock; t1 (or t0 + h) for tensor times, never perturbed.
at::Tensor end_time(const Step& step, const at::TensorOptions& t_options);

}  // namespace neuralode
