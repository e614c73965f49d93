// The one step loop, and the three solves built from it: the forward solve, the
// continuous adjoint and the checkpoint replay. Each is a Planner (where steps go),
// a System (what is stepped) and an Observer (what happens at observation times)
// handed to integrate().
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <vector>

#include "dynamics.h"
#include "events.h"
#include "observer.h"
#include "planner.h"
#include "spec.h"
#include "system.h"
#include "tape.h"

namespace neuralode {

// Hooks a user may set on f (torchdiffeq's callback_step, callback_accept_step and
// callback_reject_step, and their _adjoint variants): each is called with the step's
// start time (in the state's dtype), the system's state parts and the step size. Unset
// ones cost nothing.
struct StepCallbacks {
  using Fn = std::function<void(const at::Tensor& t0, const std::vector<at::Tensor>& state,
                                const at::Tensor& dt)>;
  Fn step;    // before every attempt (also a retry)
  Fn accept;  // after an accepted step (adaptive methods)
  Fn reject;  // after a rejected one
};

// Asks the planner for steps until it is done: each is attempted by the system,
// settled by the planner (accept or retry), then shown to the observer.
void integrate(Planner& planner, System& system, Observer& observer,
               const StepCallbacks* callbacks = nullptr);

struct Solution {
  at::Tensor ys;  // (T, *y0.shape); with an event (2, *y0.shape): y0 and y at the event
  SolveStats stats;
  std::shared_ptr<Tape> tape;  // with `record`
  at::Tensor event_t;          // with an event: its time (0-d, or (batch,) per sample)
};

// Integrates dz/dt = f(t, z) from y0 through the times t (1-D (T,) or per-sample
// (T, batch, 1)) with spec.forward. With `differentiable` every op is recorded by
// autograd (backprop through the solver); with `record` the accepted steps are kept
// for the checkpoint replay (their times with a graph to t when t requires grad).
// With `event` the solve is an event search from t[0] in the direction of t[1]: it
// steps on (past t[1] too) until g(t, y) changes sign, and outputs y0 and y at the
// event (events.h; per sample, each row at its own event, not differentiated).
Solution solve(const SolveSpec& spec, Dynamics& f, const at::Tensor& y0, const at::Tensor& t,
               bool differentiable, bool record, const StepCallbacks* callbacks = nullptr,
               const EventSpec* event = nullptr);

struct Gradients {
  at::Tensor y0, t;  // t: undefined when not requested
  std::vector<at::Tensor> params;
  SolveStats stats;
};

// The continuous adjoint (Chen et al. 2018, Algorithm 1) of a solve through t with
// outputs ys, for grad_ys = dL/dz(t_i): [z, a] from t_{T-1} back to t_0 in one pass
// with spec.backward, dL/dtheta and dL/dt accumulated outside the state. With
// `create_graph` the backward solve is recorded: the gradients are differentiable again
// (the exact second derivative of the adjoint's discretization).
Gradients adjoint_gradients(const SolveSpec& spec, Dynamics& f, const at::Tensor& t,
                            const at::Tensor& ys, const at::Tensor& grad_ys, bool need_t,
                            bool create_graph, const StepCallbacks* callbacks = nullptr);

// The discrete adjoint of a recorded solve: each step replayed with autograd, last
// first: the gradient of the discrete solve to round-off.
Gradients replay_gradients(const Tape& tape, Dynamics& f, const at::Tensor& grad_ys, bool need_t);

}  // namespace neuralode
