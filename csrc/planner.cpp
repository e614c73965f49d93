#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "planner.h"

#include "controller.h"
#include "error_norm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/ceil.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <sstream>

#include "stages.h"
#include "system.h"
#include "tape.h"

namespace neuralode {

std::string num(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}

std::vector<double> host_values(const at::Tensor& t) {
  at::Tensor h = t.detach().to(at::kDouble).cpu().contiguous();
  return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();


// ---------------------------------------------------------------- fixed grids

// A run of n_steps equal steps h from t0, the last ending at t_end. `exact` lists the
// observations at the run's end; `interp` those inside a one-step run (grids only).
struct Segment {
  at::Tensor t0, h, t_end;
  int64_t n_steps = 0;
  std::vector<int64_t> exact, interp;
};

// n_i = ceil(max |t_{i+1} - t_i| / max_step), with the same tensor arithmetic as
// the reference so that both take the same number of steps.
std::vector<int64_t> subdivision_counts(const at::Tensor& t, const StepPlan& plan) {
  const int64_t T = t.size(0);
  std::vector<int64_t> counts(std::max<int64_t>(T - 1, 0), 1);
  if (T < 2 || !std::isfinite(plan.step)) return counts;
  if (t.numel() == 0) return counts;  // per-sample times of an empty batch
  at::Tensor ratio = (t.narrow(0, 1, T - 1) - t.narrow(0, 0, T - 1)).abs().div(plan.step);
  const std::vector<double> worst = host_values(ratio.reshape({T - 1, -1}).amax(1));
  int64_t total = 0;
  for (int64_t i = 0; i < T - 1; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(worst[i]), "t: interval ", i, " has a non-finite length");
    counts[i] = static_cast<int64_t>(std::ceil(worst[i]));
    total += counts[i];
    TORCH_CHECK_VALUE(total <= plan.max_num_steps, "the fixed-step solve needs more than ",
                      plan.max_num_steps, " steps (max_step=", plan.step,
                      "); raise options['max_num_steps'] or max_step");
  }
  return counts;
}

// Interval by interval, each cut into equal steps; the last step of an interval ends
// on its observation itself (where a perturbed stage must sample f before it).
std::vector<Segment> subdivided_segments(const at::Tensor& t, const StepPlan& plan,
                                         bool backwards) {
  const int64_t T = t.size(0);
  const std::vector<int64_t> counts = subdivision_counts(t, plan);
  std::vector<Segment> segs;
  segs.reserve(counts.size());
  for (int64_t i = 0; i + 1 < T; ++i) {
    const int64_t from = backwards ? T - 1 - i : i;
    const int64_t to = backwards ? from - 1 : from + 1;
    const int64_t n = counts[backwards ? to : from];
    Segment s;
    s.t0 = t[from];
    s.h = (t[to] - t[from]).div(std::max<int64_t>(n, 1));
    s.t_end = t[to];
    s.n_steps = n;
    s.exact.push_back(to);
    segs.push_back(std::move(s));
  }
  return segs;
}

// torchdiffeq's step_size grid: t_0 + k * step_size (k = 0 .. ceil(|t_end - t_0| / step)),
// the last point replaced by t_end. Differentiable w.r.t. t_0 and t_end.
at::Tensor uniform_grid(const at::Tensor& t, const StepPlan& plan) {
  const int64_t T = t.size(0);
  at::Tensor start = t[0], end = t[T - 1];
  const double direction = (end - start).item<double>() >= 0 ? 1.0 : -1.0;
  const int64_t niters = at::ceil((end - start).abs().div(plan.step).add(1)).item<int64_t>();
  TORCH_CHECK_VALUE(niters - 1 <= plan.max_num_steps, "step_size=", plan.step, " needs ",
                    niters - 1, " steps, more than max_num_steps=", plan.max_num_steps,
                    "; raise options['max_num_steps'] or step_size");
  at::Tensor head =
      at::arange(std::max<int64_t>(niters - 1, 1), t.options()).mul(direction * plan.step) + start;
  return at::cat({head, end.reshape({1})});
}

// The grid of a grid plan (step_size or grid_constructor): from t_0 to t_{T-1}, in t's
// dtype, with a graph to t where its maker keeps one.
at::Tensor step_grid(const at::Tensor& t, const StepPlan& plan) {
  if (plan.grid == StepPlan::Grid::kUniform) return uniform_grid(t, plan);
  at::Tensor grid = plan.grid_constructor(t);
  TORCH_CHECK_VALUE(grid.dim() == 1 && grid.size(0) >= 2, "grid_constructor must return a 1-D grid of ",
                    "at least 2 times, got shape ", grid.sizes());
  TORCH_CHECK_VALUE(grid.size(0) - 1 <= plan.max_num_steps, "the grid from grid_constructor has ",
                    grid.size(0) - 1, " steps, more than max_num_steps=", plan.max_num_steps,
                    "; raise options['max_num_steps'] or return a coarser grid");
  return grid;
}

// Forwards over the grid: one step per grid interval; each observation is served by the
// step whose end reaches it (torchdiffeq's fixed-grid rule), interpolated inside it.
std::vector<Segment> grid_forward_segments(const at::Tensor& t, const StepPlan& plan) {
  at::Tensor grid = step_grid(t, plan);
  const std::vector<double> g = host_values(grid), tv = host_values(t);
  const double dir = g.back() >= g.front() ? 1.0 : -1.0;
  const int64_t T = t.size(0), G = grid.size(0);
  std::vector<Segment> segs;
  int64_t j = 1;
  for (int64_t k = 0; k + 1 < G; ++k) {
    Segment s;
    s.t0 = grid[k];
    s.t_end = grid[k + 1];
    s.h = s.t_end - s.t0;
    s.n_steps = 1;
    // Observations on an inner grid point are interpolated too (theta = 1): the same
    // value, and dL/dt_j = dL/dy . (z_{k+1} - z_k) / h, where the grid value itself would
    // give 0. The last grid point is t_{T-1} itself, differentiable through its step.
    const bool last = k + 2 == G;
    while (j < T && dir * (g[k + 1] - tv[j]) >= 0) {
      (last && tv[j] == g[k + 1] ? s.exact : s.interp).push_back(j);
      ++j;
    }
    segs.push_back(std::move(s));
  }
  return segs;
}

// Backwards over the grid with the observation times inserted as knots, so that every
// jump a += dL/dz(t_i) happens exactly at t_i.
std::vector<Segment> grid_backward_segments(const at::Tensor& t, const StepPlan& plan) {
  const std::vector<double> g = host_values(step_grid(t.detach(), plan)), tv = host_values(t);
  const int64_t T = t.size(0), G = static_cast<int64_t>(g.size());
  const double dir = tv[T - 1] >= tv[0] ? 1.0 : -1.0;
  // Knots from t_{T-1} down to t_0: (time, observation index or -1).
  std::vector<std::pair<double, int64_t>> knots;
  int64_t j = T - 1, k = G - 1;
  while (j >= 0 || k >= 0) {
    if (j >= 0 && (k < 0 || dir * (tv[j] - g[k]) >= 0)) {
      if (k >= 0 && tv[j] == g[k]) --k;  // a grid point that is an observation
      knots.emplace_back(tv[j], j);
      --j;
    } else {
      knots.emplace_back(g[k], -1);
      --k;
    }
  }
  std::vector<Segment> segs;
  const at::TensorOptions options = t.options().requires_grad(false);
  for (size_t i = 0; i + 1 < knots.size(); ++i) {
    Segment s;
    s.t0 = at::scalar_tensor(knots[i].first, options);
    s.t_end = at::scalar_tensor(knots[i + 1].first, options);
    s.h = s.t_end - s.t0;
    s.n_steps = 1;
    if (knots[i + 1].second >= 0) s.exact.push_back(knots[i + 1].second);
    segs.push_back(std::move(s));
  }
  return segs;
}

class FixedPlanner : public Planner {
 public:
  FixedPlanner(const StepPlan& plan, const at::Tensor& t, const at::TensorOptions& z_options,
               bool backwards, bool time_graph)
      : z_options_(z_options), time_graph_(time_graph), perturb_(plan.perturb) {
    std::optional<c10::AutoGradMode> graph;
    if (time_graph_) graph.emplace(true);
    if (t.size(0) < 2) return;
    if (plan.grid == StepPlan::Grid::kSubdivide) {
      segs_ = subdivided_segments(t, plan, backwards);
    } else {
      segs_ = backwards ? grid_backward_segments(t, plan) : grid_forward_segments(t, plan);
    }
  }

  std::optional<Step> next(System&) override {
    if (seg_ >= segs_.size()) return std::nullopt;
    std::optional<c10::AutoGradMode> graph;
    if (time_graph_) graph.emplace(true);
    const Segment& s = segs_[seg_];
    if (k_ == 0) {
      tk_ = s.t0;
      dt_ = s.h.to(z_options_.dtype().toScalarType());
    } else {
      tk_ = t1_;  // accumulated, t0 + k h, as the reference does
    }
    const bool last = k_ + 1 == s.n_steps;
    t1_ = last ? s.t_end : tk_ + s.h;
    Step step;
    // Fixed steps live on tensors only; NaN on the host clock never matches a kept stage.
    step.tau0 = step.dtau = step.tau_first = step.tau_last = kNaN;
    step.t0 = tk_;
    step.h = s.h;
    step.dt = dt_;
    step.t1 = t1_;
    step.perturb = perturb_;
    if (last) {
      step.end_obs = s.exact.empty() ? -1 : s.exact.front();
      step.inner = s.interp;
    }
    return step;
  }

  bool settle(Step&, double) override {
    ++accepted_;
    if (++k_ >= segs_[seg_].n_steps) {
      k_ = 0;
      ++seg_;
    }
    return true;
  }

 private:
  at::TensorOptions z_options_;
  bool time_graph_, perturb_;
  std::vector<Segment> segs_;
  size_t seg_ = 0;
  int64_t k_ = 0;
  at::Tensor tk_, t1_, dt_;
};

// An event search's grid: t0 + k * step on and on, in the direction of t[-1].
class OpenGridPlanner : public Planner {
 public:
  OpenGridPlanner(const StepPlan& plan, const at::Tensor& t, const at::TensorOptions& z_options,
                  bool time_graph)
      : step_(plan.step), max_steps_(plan.max_num_steps), time_graph_(time_graph), perturb_(plan.perturb) {
    std::optional<c10::AutoGradMode> graph;
    if (time_graph_) graph.emplace(true);
    start_ = t[0];
    const double direction = t.size(0) < 2 || (t[t.size(0) - 1] - t[0]).item<double>() >= 0 ? 1.0 : -1.0;
    h_ = at::scalar_tensor(direction * plan.step, t.options().requires_grad(false));
    dt_ = h_.to(z_options.dtype().toScalarType());
  }

  std::optional<Step> next(System&) override {
    TORCH_CHECK_VALUE(k_ < max_steps_, "no event within max_num_steps=", max_steps_, " steps of step_size=",
                      num(step_), ": event_fn(t, y) kept its initial sign up to t=",
                      num(t1_.defined() ? t1_.item<double>() : start_.item<double>()),
                      "; check that the event can happen from y0, or raise options['max_num_steps']");
    std::optional<c10::AutoGradMode> graph;
    if (time_graph_) graph.emplace(true);
    Step step;
    step.tau0 = step.dtau = step.tau_first = step.tau_last = kNaN;
    step.t0 = k_ == 0 ? start_ : t1_;
    // From the start, not accumulated: the k-th grid point carries one rounding.
    t1_ = start_ + h_ * static_cast<double>(k_ + 1);
    step.h = h_;
    step.dt = dt_;
    step.t1 = t1_;
    step.perturb = perturb_;
    return step;
  }

  bool settle(Step&, double) override {
    ++accepted_;
    ++k_;
    return true;
  }

 private:
  double step_;
  int64_t max_steps_;
  bool time_graph_, perturb_;
  int64_t k_ = 0;
  at::Tensor start_, h_, dt_, t1_;
};

// ---------------------------------------------------------------- adaptive control

// Hairer's norm of x / scale: the RMS, or the plan's norm (error_norm.h). With
// `zero_scale` (atol has zeros) the elements without a tolerance (scale 0 on a zero
// component) cannot inform a step size: they count as 0.
double scaled_rms(const StepPlan& plan, const at::Tensor& x, const at::Tensor& scale, bool zero_scale) {
  at::Tensor q = x / scale;
  if (zero_scale) q = q.masked_fill(scale == 0, 0);
  return state_norm(plan, q);
}

// The adaptive planner. Each step: the controller's size clamped to [min_step, max_step];
// it ends on the next knot or stop it reaches (`step_try`, controller.h); a step of at
// most min_step is accepted whatever its error (torchdiffeq's rule).
// Where the stages sample f next to a knot (tau_first, tau_last):
//   landing on a knot, the c = 1 stages sample it at nextafter(knot, start) (f from the
//   step's own side; torchdiffeq samples every c = 1 stage there);
//   after a step_t knot, stage 0 is the landing step's last stage, kept (FSAL): it was
//   sampled at nextafter(knot, start) and is not evaluated again;
//   after a jump_t knot, stage 0 is evaluated anew at nextafter(knot, onwards).
class AdaptivePlanner : public Planner {
 public:
  AdaptivePlanner(const StepPlan& plan, const Clock& clock, Dynamics& f, bool backwards, bool open_ended)
      : plan_(plan), clock_(clock), f_(f), backwards_(backwards), open_ended_(open_ended),
        controller_(plan, plan.tableau->order) {
    const int64_t T = clock.size();
    tau_ = clock.at(backwards ? T - 1 : 0);
    first_ = tau_;
    const double span = clock.at(T - 1) - clock.at(0);
    direction_ = (span >= 0 ? 1.0 : -1.0) * (backwards ? -1.0 : 1.0);
    span_ = std::abs(span);
    if (open_ended) {
      // An event search: no observation to serve; the observer ends the solve.
    } else if (backwards) {
      for (int64_t j = T - 2; j >= 0; --j) stops_.push_back({clock.at(j), j});
    } else {
      // Per-sample times stop at every observation (d changes there); 1-D times serve
      // observations between steps from the dense output.
      for (int64_t j = 1; j < T; ++j) (clock.per_sample() ? stops_ : dense_).push_back({clock.at(j), j});
    }
    for (double k : plan.step_t) knots_.push_back({k, false});
    for (double k : plan.jump_t) knots_.push_back({k, true});
    // In the walk's direction; a time in both lists (refused by the spec) counts as a jump.
    std::sort(knots_.begin(), knots_.end(), [d = direction_](const Knot& x, const Knot& y) {
      return d * x.tau < d * y.tau || (x.tau == y.tau && x.jump > y.jump);
    });
  }

  std::optional<Step> next(System& system) override {
    if (!open_ended_ && stop_i_ == stops_.size() && dense_i_ == dense_.size()) return std::nullopt;
    check_budget();
    if (std::isnan(h_abs_)) h_abs_ = plan_.first_step > 0 ? plan_.first_step : first_step(system);
    while (knot_i_ < knots_.size() && direction_ * (knots_[knot_i_].tau - tau_) <= 0) ++knot_i_;
    // The nearer of the next stop and the next knot ends the step if it reaches it.
    double boundary = direction_ * kInf;
    bool is_stop = false, is_knot = false;
    if (stop_i_ < stops_.size()) {
      boundary = stops_[stop_i_].tau;
      is_stop = true;
    }
    if (knot_i_ < knots_.size() && direction_ * (knots_[knot_i_].tau - boundary) <= 0) {
      is_stop = is_stop && knots_[knot_i_].tau == boundary;
      boundary = knots_[knot_i_].tau;
      is_knot = true;
    }
    const StepTry step_size = step_try(plan_, h_abs_, tau_, boundary);
    h_try_ = step_size.size;
    hits_stop_ = step_size.lands && is_stop;
    on_knot_ = step_size.lands && is_knot;
    end_ = step_size.lands ? boundary : tau_ + direction_ * h_try_;
    at_min_ = step_size.at_min;
    TORCH_CHECK_VALUE(std::isfinite(end_), "no event: event_fn(t, y) kept its initial sign until the time ",
                      "overflowed (last t=", num(tau_), "); check that the event can happen from y0");
    check_underflow();

    Step step;
    step.tau0 = tau_;
    step.dtau = direction_ * h_try_;
    step.tau_first = first_;
    step.tau_last = on_knot_ ? std::nextafter(end_, tau_) : end_;
    clock_.place(step, interval());
    return step;
  }

  bool settle(Step& step, double ratio) override {
    if (std::isnan(ratio)) {
      TORCH_CHECK_VALUE(false, backwards_ ? "the adjoint solve" : "the solution",
                        " became NaN or Inf in the step from ", clock_.where(tau_), " with dt=",
                        num(step.dtau), ": func(t, y) produced non-finite values");
    }
    const bool within = ratio <= 1.0;
    h_abs_ = controller_.next(h_try_, ratio, within);
    ++tries_;
    if (!within && !at_min_) {
      ++rejected_;
      return false;
    }
    ++accepted_;
    const int64_t from = interval();
    if (hits_stop_) step.end_obs = stops_[stop_i_++].obs;
    // Observations served by this step's dense output: inside it, or exactly at its end.
    for (; dense_i_ < dense_.size() && direction_ * (dense_[dense_i_].tau - end_) <= 0; ++dense_i_) {
      const Mark& m = dense_[dense_i_];
      if (m.tau == end_) {
        step.end_obs = m.obs;
      } else {
        step.inner.push_back(m.obs);
      }
    }
    if (step.end_obs >= 0 || !step.inner.empty()) tries_ = 0;  // the next output interval
    if (!on_knot_) {
      first_ = end_;
    } else if (knots_[knot_i_].jump) {
      first_ = std::nextafter(end_, direction_ * kInf);
    } else {
      first_ = step.tau_last;  // the kept last stage is the next step's first
    }
    tau_ = end_;
    if (clock_.per_sample() && stop_i_ < stops_.size()) {
      // A new interval: keep the step's size in time, not in s.
      const double before = clock_.rate_max(from), after = clock_.rate_max(interval());
      if (before > 0 && after > 0) h_abs_ *= before / after;
    }
    return true;
  }

 private:
  struct Mark {
    double tau;
    int64_t obs;
  };
  struct Knot {
    double tau;
    bool jump;
  };

  // The per-sample interval a step from tau_ in the walk's direction lies in.
  int64_t interval() const {
    if (!clock_.per_sample()) return 0;
    const double i = direction_ > 0 ? std::floor(tau_) : std::ceil(tau_) - 1;
    return std::clamp<int64_t>(static_cast<int64_t>(i), 0, clock_.size() - 2);
  }

  // torchdiffeq counts the steps (accepted and rejected) it takes towards each output
  // time; so do we, between one observation served and the next.
  void check_budget() const {
    TORCH_CHECK_VALUE(!open_ended_ || tries_ < plan_.max_num_steps, "no event within max_num_steps=",
                      plan_.max_num_steps, " steps: event_fn(t, y) kept its initial sign up to ",
                      clock_.where(tau_), "; check that the event can happen from y0, or raise "
                      "options['max_num_steps']");
    TORCH_CHECK_VALUE(tries_ < plan_.max_num_steps, "max_num_steps=", plan_.max_num_steps,
                      " exceeded at ", clock_.where(tau_), " (dt=", num(h_try_), "): that many steps ",
                      "were tried since the last observation time; raise options['max_num_steps'] or "
                      "loosen rtol/atol");
  }

  void check_underflow() const {
    TORCH_CHECK_VALUE(!below_resolution(tau_, direction_, h_try_, span_), "step size underflow at ",
                      clock_.where(tau_),
                      ": dt=", num(h_try_), " is below the time resolution; the problem may be stiff or "
                      "f non-smooth there: loosen rtol/atol, set options['min_step'] (steps that small "
                      "are then accepted whatever their error) or use a fixed-step method");
  }

  // Hairer's initial step (controller.h) on the planner's clock: f at the start (the
  // system's stage 0) and one more evaluation.
  double first_step(System& system) {
    Step probe;
    probe.tau0 = probe.tau_first = probe.tau_last = tau_;
    probe.dtau = direction_;  // a unit step: the adjoint's stage 0 scales with it
    const int64_t i = interval();
    clock_.place(probe, i);
    auto [z_state, f_state] = system.start(probe);
    const at::Tensor z = z_state.detach();
    // An empty state has no error: one step over everything.
    if (z.numel() == 0) return std::abs(clock_.at(clock_.size() - 1) - clock_.at(0));
    at::Tensor rate;
    if (clock_.per_sample()) rate = rows_view(clock_.rate(i), z.dim());
    auto on_clock = [&](at::Tensor d) { return rate.defined() ? d * rate : d; };
    const at::Tensor f0 = on_clock(f_state.detach());
    const at::Tensor scale = plan_.atol + z.abs() * plan_.rtol;
    const double d0 = scaled_rms(plan_, z, scale, plan_.atol_has_zero), d1 = scaled_rms(plan_, f0, scale, plan_.atol_has_zero);
    const double h0 = hairer_trial_step(d0, d1);
    const at::Tensor f1 = on_clock(f_(clock_.time(tau_ + direction_ * h0, i), z + f0 * (direction_ * h0)));
    const double d2 = scaled_rms(plan_, f1 - f0, scale, plan_.atol_has_zero) / h0;
    return hairer_first_step(h0, d1, d2, plan_.tableau->order);
  }

  const StepPlan& plan_;
  const Clock& clock_;
  Dynamics& f_;
  bool backwards_, open_ended_;
  Controller controller_;
  double direction_ = 1.0, tau_ = 0.0, h_abs_ = kNaN;
  double span_ = 0.0;  // |t[-1] - t[0]| on the clock: the scale of its resolution near 0
  std::vector<Mark> stops_, dense_;
  size_t stop_i_ = 0, dense_i_ = 0;
  std::vector<Knot> knots_;
  size_t knot_i_ = 0;
  double first_ = 0.0;  // where the next step's stage 0 samples f
  int64_t tries_ = 0;   // steps tried since the last observation was served
  // The step being tried.
  double h_try_ = 0.0, end_ = 0.0;
  bool hits_stop_ = false, on_knot_ = false, at_min_ = false;
};

// ---------------------------------------------------------------- replay

class ReplayPlanner : public Planner {
 public:
  explicit ReplayPlanner(const Tape& tape)
      : tape_(tape), k_(static_cast<int64_t>(tape.steps.size()) - 1) {}

  std::optional<Step> next(System&) override {
    if (k_ < 0) return std::nullopt;
    Step step = tape_.steps[k_].step;
    // Walking backwards, the step ends where the recorded one started: on the
    // observation the previous recorded step ended on (y0 = observation 0 first).
    step.end_obs = k_ > 0 ? tape_.steps[k_ - 1].step.end_obs : 0;
    step.inner.clear();
    step.tape_index = k_;
    return step;
  }

  bool settle(Step&, double) override {
    ++accepted_;
    --k_;
    return true;
  }

 private:
  const Tape& tape_;
  int64_t k_;
};

}  // namespace

// ---------------------------------------------------------------- clock

Clock::Clock(const at::Tensor& t, const at::TensorOptions& z_options, bool time_graph)
    : per_sample_(t.dim() == 3),
      time_graph_(time_graph),
      t_(t),
      t_options_(t.options().requires_grad(false)),
      z_options_(z_options.requires_grad(false)) {
  const int64_t T = t.size(0);
  if (!per_sample_) {
    host_ = host_values(t);
    return;
  }
  host_.assign(T, 0.0);  // the observations sit at s = 0 .. T-1
  if (T < 2) return;
  std::optional<c10::AutoGradMode> graph;
  if (time_graph_) graph.emplace(true);
  d_ = t.narrow(0, 1, T - 1) - t.narrow(0, 0, T - 1);
  rate_max_ = t.numel() == 0 ? std::vector<double>(T - 1, 0.0)  // an empty batch
                             : host_values(d_.detach().abs().reshape({T - 1, -1}).amax(1));
}

at::Tensor Clock::time(double tau, int64_t i) const {
  if (!per_sample_) return at::scalar_tensor(tau, t_options_);
  std::optional<c10::AutoGradMode> graph;
  if (time_graph_) graph.emplace(true);
  return t_[i] + d_[i] * (tau - static_cast<double>(i));
}

void Clock::place(Step& step, int64_t i) const {
  if (!per_sample_) {
    step.host_times = true;
    step.dt = at::scalar_tensor(step.dtau, z_options_);
    return;
  }
  step.host_times = false;
  std::optional<c10::AutoGradMode> graph;
  if (time_graph_) graph.emplace(true);
  step.t0 = time(step.tau0, i);
  step.h = d_[i] * step.dtau;
  step.dt = step.h.to(z_options_.dtype().toScalarType());
}

at::Tensor Clock::rate(int64_t i) const {
  return d_[i].to(z_options_.dtype().toScalarType());
}

std::string Clock::where(double tau) const {
  if (!per_sample_) return "t=" + num(tau);
  const int64_t i = std::clamp<int64_t>(static_cast<int64_t>(std::floor(tau)), 0, size() - 2);
  return "s=" + num(tau) + " (normalized time between observations " + std::to_string(i) +
         " and " + std::to_string(i + 1) + ")";
}

// ---------------------------------------------------------------- factories

std::unique_ptr<Planner> fixed_planner(const StepPlan& plan, const at::Tensor& t,
                                       const at::TensorOptions& z_options, bool backwards,
                                       bool time_graph) {
  return std::make_unique<FixedPlanner>(plan, t, z_options, backwards, time_graph);
}

std::unique_ptr<Planner> adaptive_planner(const StepPlan& plan, const Clock& clock, Dynamics& f,
                                          bool backwards, bool open_ended) {
  return std::make_unique<AdaptivePlanner>(plan, clock, f, backwards, open_ended);
}

std::unique_ptr<Planner> open_grid_planner(const StepPlan& plan, const at::Tensor& t,
                                           const at::TensorOptions& z_options, bool time_graph) {
  return std::make_unique<OpenGridPlanner>(plan, t, z_options, time_graph);
}

std::unique_ptr<Planner> replay_planner(const Tape& tape) {
  return std::make_unique<ReplayPlanner>(tape);
}

}  // namespace neuralode
