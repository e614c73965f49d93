#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "integrate.h"

#include <ATen/ops/scalar_tensor.h>

#include <optional>

#include "finite.h"

namespace neuralode {

namespace {

// A step's start time and size as the callbacks receive them (the state's dtype).
void call(const StepCallbacks::Fn& fn, const Step& step, System& system) {
  const at::Tensor t0 = step.host_times || !step.t0.defined()
                            ? at::scalar_tensor(step.tau0, step.dt.options())
                            : step.t0.detach().to(step.dt.scalar_type());
  fn(t0, system.callback_state(), step.dt.detach());
}

}  // namespace

void integrate(Planner& planner, System& system, Observer& observer, const StepCallbacks* callbacks) {
  observer.begin(system);
  while (!observer.finished()) {
    std::optional<Step> step = planner.next(system);
    if (!step) break;
    if (callbacks && callbacks->step) call(callbacks->step, *step, system);
    const double ratio = system.attempt(*step);
    const bool accepted = planner.settle(*step, ratio, system);
    if (callbacks) {
      const StepCallbacks::Fn& fn = accepted ? callbacks->accept : callbacks->reject;
      if (fn) call(fn, *step, system);
    }
    if (!accepted) continue;
    observer.on_step(*step, system);
    if (observer.finished()) break;  // an event inside this step ends the solve there
    system.commit(*step);
    observer.after_commit(*step, system);
    if (step->end_obs >= 0) observer.on_stop(step->end_obs, system);
  }
}

namespace {

// The planner of one direction of a solve.
// `open_ended`: a forward event search, which steps on past t[-1] until the observer
// has found its event.
std::unique_ptr<Planner> plan_steps(const StepPlan& plan, const at::Tensor& t,
                                    const std::optional<Clock>& clock, Dynamics& f,
                                    const at::TensorOptions& z_options, bool backwards,
                                    bool time_graph, bool open_ended = false) {
  if (plan.adaptive()) return adaptive_planner(plan, *clock, f, backwards, open_ended);
  if (open_ended) return open_grid_planner(plan, t, z_options, time_graph);
  return fixed_planner(plan, t, z_options, backwards, time_graph);
}

constexpr const char* kAdjointHint =
    "the vector-Jacobian products of func(t, y) are not finite there (is f differentiable "
    "at those states?), or the backward solve is unstable: try smaller steps or tolerances";

// The gradients, checked in one host read (dL/dz is also watched per observation).
void check_gradients_finite(const Gradients& g) {
  std::vector<at::Tensor> parts{g.y0};
  std::vector<std::string> names{"dL/dy0"};
  if (g.t.defined()) {
    parts.push_back(g.t);
    names.push_back("dL/dt");
  }
  for (const at::Tensor& p : g.params) {
    parts.push_back(p);
    names.push_back("dL/dtheta");
  }
  const std::vector<bool> ok = finite_each(parts);
  for (size_t i = 0; i < ok.size(); ++i) {
    TORCH_CHECK_VALUE(ok[i], "the gradient ", names[i], " became NaN or Inf: ", kAdjointHint);
  }
}

}  // namespace

Solution solve(const SolveSpec& spec, Dynamics& f, const at::Tensor& y0, const at::Tensor& t,
               bool differentiable, bool record, const StepCallbacks* callbacks,
               const EventSpec* event) {
  const SolveMeter meter(f);
  const StepPlan& plan = spec.forward;
  // A recorded solve whose gradient w.r.t. t is wanted places its steps from a leaf
  // copy of t with autograd on, so that the replay can differentiate the step times.
  const bool time_graph = record && t.requires_grad();
  const at::Tensor t_plan = time_graph ? t.detach().requires_grad_(true) : t;
  std::shared_ptr<Tape> tape;
  if (record) {
    tape = std::make_shared<Tape>();
    tape->tableau = plan.tableau;
    tape->cubic = plan.interp == StepPlan::Interp::kCubic;
    tape->t = t_plan;
    tape->time_graph = time_graph;
  }
  std::optional<Clock> clock;
  if (plan.adaptive()) clock.emplace(t_plan, y0.options(), time_graph);
  if (plan.per_sample) {
    TORCH_CHECK_VALUE(plan.adaptive(), "per-sample steps need an adaptive method");
    TORCH_CHECK_VALUE(event == nullptr, "per-sample steps do not support events yet");
    TORCH_CHECK_VALUE(y0.dim() >= 1, "per-sample steps need y0 with the batch as its first dimension");
    // 1-D times: every sample observed at the same times, each stepping on its own.
    const at::Tensor t_rows = t.dim() == 1 ? t.reshape({-1, 1, 1}).expand({t.size(0), y0.size(0), 1}) : t;
    std::unique_ptr<Planner> planner = per_sample_planner(plan, t_rows, f, y0.options());
    ForwardSystem system(f, plan, y0.clone(), t.options().requires_grad(false), differentiable);
    // The tape: every step (its rows' sizes, verdicts and observations) from its start.
    // Times carry no graph here (host clocks): dL/dt comes from the ODE (odeint.py).
    if (tape) {
      tape->t = t_rows;
      tape->time_graph = false;
    }
    OutputObserver observer(t_rows, nullptr, tape.get(), false, nullptr, /*per_sample=*/true);
    integrate(*planner, system, observer, callbacks);
    at::Tensor ys = observer.outputs();
    SolveStats stats = meter.finish(planner->accepted(), planner->rejected());
    stats.row_accepted = planner->row_accepted();
    return {ys, stats, tape};
  }
  if (event != nullptr) {
    TORCH_CHECK_VALUE(t.dim() == 1, "an event search needs 1-D times [t0, t1]");
    TORCH_CHECK_VALUE(plan.adaptive() || plan.grid == StepPlan::Grid::kUniform,
                      "an event search with a fixed-step method needs options['step_size']");
  }
  std::unique_ptr<Planner> planner = plan_steps(plan, t_plan, clock, f, y0.options(), /*backwards=*/false,
                                                time_graph, /*open_ended=*/event != nullptr);
  // The solve's own copy of y0: stage 0 hands the state to f, and the tape keeps it.
  ForwardSystem system(f, plan, y0.clone(), t.options().requires_grad(false), differentiable);
  OutputObserver observer(t_plan, clock ? &*clock : nullptr, tape.get(),
                          plan.interp == StepPlan::Interp::kCubic, event);
  integrate(*planner, system, observer, callbacks);
  at::Tensor ys = observer.outputs();
  // Adaptive steps check every step's error ratio; fixed steps, their outputs once.
  if (!plan.adaptive()) check_outputs_finite(ys, t);
  Solution out{ys, meter.finish(planner->accepted(), planner->rejected()), tape};
  if (event != nullptr) out.event_t = observer.event_time();
  return out;
}

Gradients adjoint_gradients(const SolveSpec& spec, Dynamics& f, const at::Tensor& t,
                            const at::Tensor& ys, const at::Tensor& grad_ys, bool need_t,
                            bool create_graph, const StepCallbacks* callbacks) {
  const SolveMeter meter(f);
  if (spec.backward.per_sample) {
    // The joint adjoint of per-sample steps: each row's [z_b, a_b] on its own steps
    // backwards, dL/dtheta accumulated over the batch with one product per stage.
    TORCH_CHECK_VALUE(!create_graph, "second derivatives (create_graph=True) through the per-sample adjoint "
                      "are not supported; use gradient='backprop'");
    const StepPlan& plan = spec.backward;
    const at::Tensor t_rows = t.dim() == 1 ? t.reshape({-1, 1, 1}).expand({t.size(0), ys.size(1), 1}) : t;
    std::unique_ptr<Planner> planner = per_sample_planner(plan, t_rows, f, ys.options(), /*backwards=*/true);
    AdjointSystem system(f, plan, ys[t.size(0) - 1], t_rows[0], t.options().requires_grad(false),
                         /*seminorm=*/true, need_t, /*differentiable=*/false);
    SampleAdjointObserver observer(f, t_rows, ys, grad_ys, need_t);
    integrate(*planner, system, observer, callbacks);
    Gradients g;
    g.y0 = system.a();
    if (need_t) {
      g.t = observer.grad_t(system.a_t());
      if (t.dim() == 1) g.t = g.t.sum({1, 2});  // the times every row shares
    }
    g.params = system.a_params();
    check_gradients_finite(g);
    g.stats = meter.finish(planner->accepted(), planner->rejected());
    g.stats.row_accepted = planner->row_accepted();
    return g;
  }
  f.set_create_graph(create_graph);
  const StepPlan& plan = spec.backward;
  const at::TensorOptions t_options = t.options().requires_grad(false);
  std::optional<Clock> clock;
  if (plan.adaptive()) clock.emplace(t, ys.options());
  std::unique_ptr<Planner> planner =
      plan_steps(plan, t, clock, f, ys.options(), /*backwards=*/true, /*time_graph=*/false);
  AdjointSystem system(f, plan, ys[t.size(0) - 1], t[0], t_options, spec.seminorm, need_t,
                       create_graph);
  AdjointObserver observer(f, t, ys, grad_ys, need_t);
  integrate(*planner, system, observer, callbacks);
  observer.watch().check("the adjoint dL/dz", t, kAdjointHint);
  Gradients g;
  g.y0 = system.a();
  if (need_t) g.t = observer.grad_t(system.a_t());
  g.params = system.a_params();
  check_gradients_finite(g);
  g.stats = meter.finish(planner->accepted(), planner->rejected());
  return g;
}

Gradients replay_gradients(const Tape& tape, Dynamics& f, const at::Tensor& grad_ys, bool need_t) {
  const SolveMeter meter(f);
  std::unique_ptr<Planner> planner = replay_planner(tape);
  ReplaySystem system(f, tape, grad_ys, tape.t.options().requires_grad(false));
  ReplayObserver observer(grad_ys, tape.steps.empty() ? 0 : tape.steps.back().step.end_obs);
  integrate(*planner, system, observer);
  observer.watch().check("the gradient dL/dz", tape.t, kAdjointHint);
  Gradients g;
  g.y0 = system.a();
  if (need_t && tape.time_graph) g.t = system.grad_t();
  g.params = system.a_params();
  check_gradients_finite(g);
  g.stats = meter.finish(planner->accepted(), planner->rejected());
  return g;
}

}  // namespace neuralode
