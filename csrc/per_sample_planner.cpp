// The per-sample planner: every sample of a batch (the first dimension of the state)
// steps on its own. f is still evaluated once per stage on the whole batch, with each
// row at its own time (t of shape (batch, 1)); what is per sample is the step size, the
// error ratio, the accept/reject decision, the controller's memory and the position in
// the sample's own observation times. A rejected row keeps its state and tries again
// with a smaller step while the others move on; a finished row takes steps of size 0.
// One host read per step: the rows' error ratios.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/TensorOperators.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "controller.h"
#include "planner.h"
#include "stages.h"
#include "system.h"

namespace neuralode {
namespace {

// One value per row as a (rows, 1) tensor with `options`.
at::Tensor column(const std::vector<double>& values, const at::TensorOptions& options) {
  return host_tensor(values, options).unsqueeze(1);
}

// The RMS over each row of x / scale (elements with scale 0 and x 0 count 0).
std::vector<double> row_rms(const at::Tensor& x, const at::Tensor& scale) {
  const int64_t rows = x.size(0);
  const at::Tensor q = (x / scale).masked_fill(x == 0, 0);
  if (x.numel() == 0) return std::vector<double>(rows, 0.0);
  return host_values(by_rows(q).square().mean(1).sqrt());
}

class PerSamplePlanner : public Planner {
 public:
  PerSamplePlanner(const StepPlan& plan, const at::Tensor& t, Dynamics& f, const at::TensorOptions& z_options,
                   bool backwards)
      : plan_(plan), f_(f), z_options_(z_options.requires_grad(false)),
        t_options_(t.options().requires_grad(false)), backwards_(backwards) {
    TORCH_CHECK_VALUE(t.dim() == 3 && t.size(2) == 1, "per-sample steps need times of shape (T, batch, 1)");
    T_ = t.size(0);
    B_ = t.size(1);
    times_ = host_values(t);  // [j * B + b]
    tau_.resize(B_);
    h_.assign(B_, std::numeric_limits<double>::quiet_NaN());
    dir_.resize(B_);
    // Forwards: the next observation to serve (by dense output); backwards: the next one
    // to land on (every observation is a stop: the adjoint's jumps).
    next_obs_.assign(B_, backwards ? T_ - 2 : 1);
    // Forwards, observations are served by dense output unless the interpolant is far
    // below the method's order (dopri8: a 4th-order interpolant): then each row lands
    // on every observation of its own, as the adjoint does.
    const int dense_order = plan.tableau->has_mid ? 4 : 3;
    stops_ = backwards || dense_order + 1 < plan.tableau->order;
    done_.assign(B_, T_ < 2);
    tries_.assign(B_, 0);
    accepted_rows_.assign(B_, 0);
    rejected_rows_.assign(B_, 0);
    for (int64_t b = 0; b < B_; ++b) {
      controllers_.emplace_back(plan, plan.tableau->order);
      tau_[b] = at(backwards ? T_ - 1 : 0, b);
      dir_[b] = (T_ < 2 || at(T_ - 1, b) >= at(0, b) ? 1.0 : -1.0) * (backwards ? -1.0 : 1.0);
    }
  }

  std::optional<Step> next(System& system) override {
    if (std::all_of(done_.begin(), done_.end(), [](bool d) { return d; })) return std::nullopt;
    if (!started_) {
      first_steps(system);
      started_ = true;
    }
    Step step;
    step.host_times = false;
    step.row_errors = true;
    // The stage 0 kept by the system serves while no row has moved (see commit).
    step.tau0 = step.dtau = std::numeric_limits<double>::quiet_NaN();
    step.tau_first = static_cast<double>(moves_);
    step.tau_last = static_cast<double>(moves_ + 1);
    step.row_h.assign(B_, 0.0);
    lands_.assign(B_, false);
    at_min_.assign(B_, false);
    for (int64_t b = 0; b < B_; ++b) {
      if (done_[b]) continue;
      TORCH_CHECK_VALUE(tries_[b] < plan_.max_num_steps, "max_num_steps=", plan_.max_num_steps, " exceeded for sample ",
                        b, " at t=", num(tau_[b]), " (dt=", num(h_[b]), "): that many steps were tried since its "
                        "last observation; raise options['max_num_steps'] or loosen rtol/atol");
      // The row's target (its last time, or its next stop) ends the step that reaches it
      // (controller.h's step_try, as for the shared clock).
      const StepTry step_size = step_try(plan_, h_[b], tau_[b], target(b));
      lands_[b] = step_size.lands;
      at_min_[b] = step_size.at_min;
      const double h_try = step_size.size;
      TORCH_CHECK_VALUE(!below_resolution(tau_[b], dir_[b], h_try, std::abs(at(T_ - 1, b) - at(0, b))),
                        "step size underflow for sample ",
                        b, " at t=", num(tau_[b]), ": dt=", num(h_try), " is below the time resolution; the problem "
                        "may be stiff or f non-smooth there: loosen rtol/atol or set options['min_step']");
      step.row_h[b] = dir_[b] * h_try;
    }
    step.t0 = column(tau_, t_options_);
    step.h = column(step.row_h, t_options_);
    step.dt = step.h.to(z_options_.dtype().toScalarType());
    return step;
  }

  bool settle(Step& step, double ratio) override {
    TORCH_CHECK(false, "internal: the per-sample planner settles with the system's row ratios");
  }

  bool settle(Step& step, double, System& system) override {
    const std::vector<double>& ratios = system.row_ratios();
    TORCH_CHECK(static_cast<int64_t>(ratios.size()) == B_, "internal: one error ratio per row");
    std::vector<double> accept(B_, 0.0);
    bool any = false;
    for (int64_t b = 0; b < B_; ++b) {
      if (done_[b]) continue;
      const double r = ratios[b];
      TORCH_CHECK_VALUE(!std::isnan(r), "the solution of sample ", b, " became NaN or Inf in the step from t=",
                        num(tau_[b]), " with dt=", num(step.row_h[b]), ": func(t, y) produced non-finite values");
      const double h_try = std::abs(step.row_h[b]);
      const bool within = r <= 1.0;
      const double planned = h_[b];
      h_[b] = controllers_[b].next(h_try, r, within);
      // A step shortened to land on an observation says little about the step size
      // the dynamics allow: an accepted one leaves the planned size for the next step
      // (else every stop would shrink the steps after it).
      if (within && lands_[b] && h_try < planned) h_[b] = std::max(h_[b], planned);
      ++tries_[b];
      if (!within && !at_min_[b]) {
        ++rejected_rows_[b];
        continue;
      }
      ++accepted_rows_[b];
      accept[b] = 1.0;
      any = true;
      const double end = lands_[b] ? target(b) : tau_[b] + step.row_h[b];
      if (stops_) {
        // Landed on its next observation: served at the step's end (forwards) or the
        // observer's jump (backwards); then on to the next one in the walk's direction.
        if (lands_[b]) {
          step.sample_obs.push_back({b, next_obs_[b], 1.0});
          tries_[b] = 0;
          done_[b] = next_obs_[b] == (backwards_ ? 0 : T_ - 1);
          next_obs_[b] += backwards_ ? -1 : 1;
        }
        tau_[b] = end;
        continue;
      }
      // Observations this step reaches, served by its dense output (theta in (0, 1]).
      for (; next_obs_[b] < T_ && dir_[b] * (at(next_obs_[b], b) - end) <= 0; ++next_obs_[b]) {
        const double theta = lands_[b] && next_obs_[b] == T_ - 1
                                 ? 1.0
                                 : (at(next_obs_[b], b) - tau_[b]) / step.row_h[b];
        step.sample_obs.push_back({b, next_obs_[b], theta});
        tries_[b] = 0;
      }
      tau_[b] = end;
      if (lands_[b]) done_[b] = true;
    }
    for (int64_t b = 0; b < B_; ++b) step.mixed = step.mixed || (step.row_h[b] != 0.0 && accept[b] == 0.0);
    if (!any) {
      ++rejected_;
      return false;
    }
    ++accepted_;
    ++moves_;
    // Where no row that tried was rejected, every row moves to the step's end (a finished
    // row's step has size 0: its end is where it is): no mask, the plain commit.
    if (step.mixed) {
      step.accept_rows = host_tensor(accept, z_options_.dtype(at::kBool));
    }
    return true;
  }

  std::vector<int64_t> row_accepted() const override { return accepted_rows_; }

 private:
  double at(int64_t j, int64_t b) const { return times_[j * B_ + b]; }
  // Where row b's steps must land next: its last time (dense outputs), or its next
  // observation (stops: backwards, and forwards with a low-order interpolant).
  double target(int64_t b) const { return at(stops_ ? next_obs_[b] : T_ - 1, b); }

  // Hairer's initial step per row (controller.h; each row on its own RMS):
  // f at the start (the system's stage 0) and one more evaluation on the batch.
  void first_steps(System& system) {
    Step probe;
    probe.host_times = false;
    probe.tau_first = 0.0;  // = the first step's: stage 0 is kept for it
    probe.t0 = column(tau_, t_options_);
    probe.h = column(dir_, t_options_);  // a unit step per row
    probe.dt = probe.h.to(z_options_.dtype().toScalarType());
    auto [z_state, f_state] = system.start(probe);
    if (plan_.first_step > 0) {
      std::fill(h_.begin(), h_.end(), plan_.first_step);
      return;
    }
    c10::NoGradGuard no_grad;
    const at::Tensor z = z_state.detach(), f0 = f_state.detach();
    if (z.numel() == 0) {
      std::fill(h_.begin(), h_.end(), 1.0);
      return;
    }
    const at::Tensor scale = plan_.atol + z.abs() * plan_.rtol;
    const std::vector<double> d0 = row_rms(z, scale), d1 = row_rms(f0, scale);
    std::vector<double> h0(B_);
    for (int64_t b = 0; b < B_; ++b) h0[b] = hairer_trial_step(d0[b], d1[b]);
    std::vector<double> signed_h0(B_), t1(B_);
    for (int64_t b = 0; b < B_; ++b) {
      signed_h0[b] = dir_[b] * h0[b];
      t1[b] = tau_[b] + signed_h0[b];
    }
    const at::Tensor step = rows_view(column(signed_h0, z.options()).reshape({B_}), z.dim());
    const at::Tensor f1 = f_(column(t1, t_options_), z + f0 * step);
    const std::vector<double> d2 = row_rms(f1 - f0, scale);
    for (int64_t b = 0; b < B_; ++b) h_[b] = hairer_first_step(h0[b], d1[b], d2[b] / h0[b], plan_.tableau->order);
  }

  const StepPlan& plan_;
  Dynamics& f_;
  at::TensorOptions z_options_, t_options_;
  int64_t T_ = 0, B_ = 0;
  std::vector<double> times_, tau_, h_, dir_;
  std::vector<int64_t> next_obs_, tries_, accepted_rows_, rejected_rows_;
  std::vector<bool> done_, lands_, at_min_;
  std::vector<Controller> controllers_;
  int64_t moves_ = 0;  // steps in which some row moved: the system's stage-0 clock
  bool started_ = false;
  bool backwards_, stops_ = false;
};

}  // namespace

std::unique_ptr<Planner> per_sample_planner(const StepPlan& plan, const at::Tensor& t, Dynamics& f,
                                            const at::TensorOptions& z_options, bool backwards) {
  return std::make_unique<PerSamplePlanner>(plan, t, f, z_options, backwards);
}

}  // namespace neuralode
