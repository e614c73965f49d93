// Planners: where the steps of a solve go. A planner hands out steps, takes back
// each step's error ratio and says whether it is accepted; it knows which
// observations a step serves. Three kinds:
//   FixedPlanner     fixed steps (one per interval, max_step subdivision, or a grid:
//                    step_size's uniform one or grid_constructor's, observations
//                    between grid points interpolated), forwards or backwards; times
//                    are tensors computed from t, so they may carry a graph to it;
//   AdaptivePlanner  error control (I/PI controller, Hairer's first step, step sizes
//                    clamped to [min_step, max_step], step_t/jump_t knots), on the host
//                    clock of a Clock;
//   ReplayPlanner    the recorded steps of a forward solve, last first.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dynamics.h"
#include "spec.h"
#include "step.h"

namespace neuralode {

class System;
struct Tape;

// A double with full precision, for error messages.
std::string num(double x);
// A tensor's values on the host, as doubles (one read).
std::vector<double> host_values(const at::Tensor& t);

class Planner {
 public:
  virtual ~Planner() = default;
  // The next step to try, or nullopt when the solve is done. `system` answers the
  // first-step heuristic's question (the state and f at the start).
  virtual std::optional<Step> next(System& system) = 0;
  // Takes back the error ratio of the step just tried (0 when the method has no
  // estimate); returns whether it is accepted and, if so, fills in the
  // observations it serves.
  virtual bool settle(Step& step, double ratio) = 0;
  // The same with the system that tried the step (per-sample planners read its
  // row_ratios); others ignore it.
  virtual bool settle(Step& step, double ratio, System&) { return settle(step, ratio); }
  int64_t accepted() const { return accepted_; }
  // Per-sample planners: each sample's accepted steps (others: empty).
  virtual std::vector<int64_t> row_accepted() const { return {}; }
  int64_t rejected() const { return rejected_; }

 protected:
  int64_t accepted_ = 0, rejected_ = 0;
};

// The planner's clock. With 1-D times it is the time itself. With per-sample times
// (T, batch, 1) it is a normalized time s in [0, T-1]: on interval i (s in
// [i, i+1]) sample b is at t_b(s) = t[i,b] + (s - i) d[i,b], d = t[i+1] - t[i], so
// a step ds is the per-sample step h_b = ds * d[i,b]: one clock and one error
// control for a batch whose times differ.
class Clock {
 public:
  // With `time_graph` the tensor times are computed with autograd on (t is then a
  // leaf requiring grad: the checkpoint replay differentiates through them).
  Clock(const at::Tensor& t, const at::TensorOptions& z_options, bool time_graph = false);

  bool per_sample() const { return per_sample_; }
  int64_t size() const { return static_cast<int64_t>(host_.size()); }
  // Observation i on the clock.
  double at(int64_t i) const { return per_sample_ ? static_cast<double>(i) : host_[i]; }
  // The time f receives at tau on interval i (1-D: a 0-d tensor; per-sample: (batch, 1)).
  at::Tensor time(double tau, int64_t interval) const;
  // Sets step.t0, h and dt from its host clock (tau0, dtau) on interval i.
  void place(Step& step, int64_t interval) const;
  // dt for a step dtau on interval i (per-sample: (batch, 1)).
  at::Tensor rate(int64_t interval) const;
  // The largest |d| on interval i (1 for 1-D times).
  double rate_max(int64_t interval) const { return per_sample_ ? rate_max_[interval] : 1.0; }
  // "t=..." or "s=... (between t[i] and t[i+1])", for error messages.
  std::string where(double tau) const;

 private:
  bool per_sample_, time_graph_;
  at::Tensor t_, d_;
  std::vector<double> host_, rate_max_;
  at::TensorOptions t_options_, z_options_;
};

// A fixed-step plan over t, forwards (t_0 -> t_{T-1}) or backwards. With
// `time_graph` the step times are computed with autograd on (t then requires grad:
// the checkpoint replay differentiates through them).
std::unique_ptr<Planner> fixed_planner(const StepPlan& plan, const at::Tensor& t,
                                       const at::TensorOptions& z_options, bool backwards,
                                       bool time_graph);

// An adaptive plan on `clock`. Forwards, observations between steps are served by
// dense output (1-D times) or are stops (per-sample times); backwards, every
// observation is a stop (the adjoint's jumps).
// `open_ended` (forwards, 1-D times): no observation ends the solve; it steps on past
// t[-1] until the integration loop's observer is finished (an event search), at most
// plan.max_num_steps tries.
std::unique_ptr<Planner> adaptive_planner(const StepPlan& plan, const Clock& clock, Dynamics& f,
                                          bool backwards, bool open_ended = false);

// An event search's fixed steps: t[0] + k * step (plan.step, torchdiffeq's step_size) in
// the direction of t[-1], on past it, at most plan.max_num_steps.
std::unique_ptr<Planner> open_grid_planner(const StepPlan& plan, const at::Tensor& t,
                                           const at::TensorOptions& z_options, bool time_graph);

// Each sample its own adaptive steps (plan.per_sample) through per-sample times t
// (T, batch, 1): its own step size, error ratio, accept/reject and controller. Forwards
// every observation is served by the dense output of the step that reaches it;
// backwards every row lands on each of its observations (the adjoint's jumps). `f`
// answers the per-row first-step heuristic.
std::unique_ptr<Planner> per_sample_planner(const StepPlan& plan, const at::Tensor& t, Dynamics& f,
                                            const at::TensorOptions& z_options, bool backwards = false);

// The recorded steps of `tape`, last first; each ends on the observation where
// the recorded step started.
std::unique_ptr<Planner> replay_planner(const Tape& tape);

}  // namespace neuralode
