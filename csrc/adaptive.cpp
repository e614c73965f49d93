// Adaptive Runge-Kutta loops. Step control, accept/reject, dense output and the
// observation bookkeeping run here in C++; each step reads one number from the
// device (its RMS error ratio), and the stages go through the fused kernels.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "adaptive.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "stage_combine.h"
#include "stepper.h"

namespace neuralode {
namespace {

// Formats a double with full precision for error messages.
std::string num(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}

// sqrt(mean((x / scale)^2)): Hairer's RMS norm.
double rms(const at::Tensor& x, const at::Tensor& scale) {
  return (x / scale).pow(2).mean().sqrt().item<double>();
}

// Hairer's initial step (Hairer, Norsett & Wanner, "Solving ODEs I", II.4), as
// torchdiffeq chooses it: two evaluations of f (the first one, f0, is given).
double initial_step(Dynamics& f, double t0, const at::Tensor& y0, const at::Tensor& f0,
                    const at::TensorOptions& t_options, int order, const StepControl& c,
                    double direction) {
  const at::Tensor scale = c.atol + y0.abs() * c.rtol;
  const double d0 = rms(y0, scale), d1 = rms(f0, scale);
  const double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  const at::Tensor y1 = y0 + f0 * (direction * h0);
  const at::Tensor f1 = f(at::scalar_tensor(t0 + direction * h0, t_options), y1);
  const double d2 = rms(f1 - f0, scale) / h0;
  const double dmax = std::max(d1, d2);
  const double h1 = dmax <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / dmax, 1.0 / (order + 1));
  return std::min(100 * h0, h1);
}

// The next step size from the RMS error ratio of the last try (torchdiffeq's
// rule for the I controller: an accepted step never shrinks the next one).
class Controller {
 public:
  Controller(const StepControl& c, int order) : c_(c), order_(order) {}

  double next(double h_abs, double ratio, bool accepted) {
    if (!std::isfinite(ratio)) return h_abs * c_.dfactor;
    if (ratio == 0.0) return h_abs * c_.ifactor;
    double factor = c_.safety * std::pow(ratio, -(c_.pi ? c_.beta1 : 1.0) / order_);
    if (c_.pi && accepted) factor *= std::pow(previous_, c_.beta2 / order_);
    factor = std::min(c_.ifactor, std::max(factor, accepted ? 1.0 : c_.dfactor));
    if (accepted) previous_ = std::max(ratio, 1e-4);
    return h_abs * factor;
  }

 private:
  const StepControl& c_;
  int order_;
  double previous_ = 1.0;
};

// Dense output: y(t0 + theta h) = y0 + w_y1 (y1 - y0) + h (sum_j w_k[j] k_j + w_f1 f1).
// With midpoint weights, the quartic through y0, y(1/2), y1 with slopes f0, f1;
// otherwise the cubic Hermite interpolant through y0, y1 with slopes f0, f1.
struct DenseWeights {
  double y1;
  std::vector<double> k;
  double f1;
};

DenseWeights dense_weights(const Tableau& tab, double th) {
  const double t2 = th * th, t3 = t2 * th, t4 = t3 * th;
  DenseWeights w{0.0, std::vector<double>(tab.stages, 0.0), 0.0};
  if (tab.has_mid) {
    w.y1 = -5 * t2 + 14 * t3 - 8 * t4;
    const double w_mid = 16 * t2 - 32 * t3 + 16 * t4;
    for (int j = 0; j < tab.stages; ++j) w.k[j] = w_mid * tab.c_mid[j];
    w.k[0] += th - 4 * t2 + 5 * t3 - 2 * t4;
    w.f1 = t2 - 3 * t3 + 2 * t4;
  } else {
    w.y1 = 3 * t2 - 2 * t3;
    w.k[0] = t3 - 2 * t2 + th;
    w.f1 = t3 - t2;
  }
  return w;
}

// Dense output at several points of one step at once: row m is y(t0 + thetas[m] h),
// shape (m, *y0.shape). One matrix product of the (m x terms) weights with the
// stacked [y0, y1, k_0 .. k_{s-1}, f1]: two ops per step however many observations
// fall in it, and autograd through them stays in C++.
at::Tensor interpolate(const Tableau& tab, const std::vector<double>& thetas, double h,
                       const at::Tensor& y0, const at::Tensor& y1,
                       const std::vector<at::Tensor>& ks, const at::Tensor& f1) {
  const int64_t n_terms = tab.stages + 3;
  std::vector<double> weights;
  weights.reserve(thetas.size() * n_terms);
  for (double theta : thetas) {
    const DenseWeights w = dense_weights(tab, theta);
    weights.push_back(1.0 - w.y1);
    weights.push_back(w.y1);
    for (int j = 0; j < tab.stages; ++j) weights.push_back(h * w.k[j]);
    weights.push_back(h * w.f1);
  }
  std::vector<at::Tensor> terms{y0, y1};
  terms.insert(terms.end(), ks.begin(), ks.begin() + tab.stages);
  terms.push_back(f1);
  const int64_t m = static_cast<int64_t>(thetas.size());
  // copy=true: the weights live in this function's vector, autograd keeps w.
  const at::Tensor w = at::from_blob(weights.data(), {m, n_terms}, at::kDouble)
                           .to(y0.options().requires_grad(false), /*non_blocking=*/false,
                               /*copy=*/true);
  std::vector<int64_t> shape{m};
  shape.insert(shape.end(), y0.sizes().begin(), y0.sizes().end());
  return w.matmul(at::stack(terms).reshape({n_terms, -1})).reshape(shape);
}

// The time of stage i of a step from t over h: stages with c_i = 1 sit at t_end,
// which for a step that ends on a knot (step_t) is just before the knot, so that
// f is sampled on the step's own side of a discontinuity.
double stage_clock(const Tableau& tab, int i, double t, double h, double t_end) {
  return tab.c[i] == 1.0 ? t_end : t + tab.c[i] * h;
}

// The stages k_1 .. k_{s-1} of one step from (t, z) over h, given k_0.
void fill_stages(Dynamics& f, const Tableau& tab, const StageCoefficients& coef,
                 const Combiner& combine, double t, double h, double t_end, const at::Tensor& dt,
                 const at::Tensor& z, const at::TensorOptions& t_options,
                 std::vector<at::Tensor>& ks) {
  ks.resize(1);
  for (int i = 1; i < tab.stages; ++i) {
    at::Tensor zi = combine(z, ks, coef.a[i], dt);
    ks.push_back(f(at::scalar_tensor(stage_clock(tab, i, t, h, t_end), t_options), zi));
  }
}

// Observation and knot times of a 1-D time tensor, on the host.
std::vector<double> host_times(const at::Tensor& t) {
  at::Tensor h = t.detach().to(at::kDouble).cpu().contiguous();
  return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
}

// Where the next step must stop: the first knot strictly beyond t (in the
// direction of integration), or +-inf.
double next_knot(const std::vector<double>& knots, double t, double direction) {
  for (double k : knots) {
    if (direction * (k - t) > 0) return k;
  }
  return direction * std::numeric_limits<double>::infinity();
}

// A tolerance for a parameter's adjoint: the state's when it is one value, else
// its largest (per-element tolerances are laid out like the state, not theta).
at::Tensor param_tol(const at::Tensor& tol, const at::Tensor& like) {
  return (tol.numel() == 1 ? tol.reshape({}) : tol.amax()).to(like.scalar_type());
}

// Whether a step of h_abs from t should end at `stop`: when it reaches it, or
// would leave less than 1% of a step before it (stretching the step by at most
// 1% beats a sliver step; the error estimate is of the step actually taken).
bool reaches(double t, double stop, double h_abs) { return std::abs(stop - t) <= 1.01 * h_abs; }

[[noreturn]] void fail_non_finite(const char* what, double t, double h) {
  TORCH_CHECK_VALUE(false, what, " became NaN or Inf in the step from t=", num(t), " with dt=",
                    num(h), ": func(t, y) produced non-finite values");
}

void check_step(const StepControl& c, const SolveStats& stats, double t, double h_abs,
                double direction) {
  TORCH_CHECK_VALUE(stats.accepted + stats.rejected < c.max_num_steps,
                    "max_num_steps=", c.max_num_steps, " exceeded at t=", num(t),
                    " (dt=", num(h_abs), "); raise options['max_num_steps'] or loosen rtol/atol");
  TORCH_CHECK_VALUE(h_abs >= c.min_step && t + direction * h_abs != t,
                    "step size underflow at t=", num(t), ": dt=", num(h_abs),
                    c.min_step > 0 ? " is below min_step=" + num(c.min_step) : " is below the time resolution",
                    "; the problem may be stiff or f non-smooth there: loosen rtol/atol or use a fixed-step method");
}

}  // namespace

AdaptiveForwardResult solve_adaptive_forward(Dynamics& f, const at::Tensor& y0,
                                             const at::Tensor& t, const Tableau& tab,
                                             const StepControl& control, bool differentiable,
                                             bool record) {
  const SolveMeter meter(f);
  const std::vector<double> times = host_times(t);
  const int64_t T = static_cast<int64_t>(times.size());
  const at::TensorOptions t_options = t.options().requires_grad(false);
  const at::TensorOptions z_options = y0.options().requires_grad(false);
  const Combiner combine(differentiable);
  const StageCoefficients coef(tab);
  Controller controller(control, tab.order);
  AdaptiveForwardResult r;

  // Outputs in order, as chunks of rows: y0, then per accepted step its
  // interpolated observations and the one at its end, if any.
  std::vector<at::Tensor> chunks{y0.unsqueeze(0)};
  if (T > 1) {
    const double direction = times[T - 1] >= times[0] ? 1.0 : -1.0;
    const int64_t n = y0.numel();
    double tc = times[0];
    double t_first = tc;  // where k_0 of the next step was sampled
    at::Tensor z = y0;
    std::vector<at::Tensor> ks{f(at::scalar_tensor(tc, t_options), z)};
    double h_abs = control.first_step > 0
                       ? control.first_step
                       : initial_step(f, tc, z.detach(), ks[0].detach(), t_options, tab.order,
                                      control, direction);
    int64_t j = 1;
    while (j < T) {
      h_abs = std::min(h_abs, control.max_step);
      const double knot = next_knot(control.step_t, tc, direction);
      const bool hits_knot = reaches(tc, knot, h_abs);
      const double h_try = hits_knot ? std::abs(knot - tc) : h_abs;
      check_step(control, r.stats, tc, h_try, direction);
      const double h = direction * h_try;
      const double t_next = hits_knot ? knot : tc + h;
      const at::Tensor dt = at::scalar_tensor(h, z_options);

      // On a knot, the last stages sample f just before it and the next step's first
      // stage just after it: step_t marks where f may jump.
      const double t_stage_end = hits_knot ? std::nextafter(t_next, tc) : t_next;
      fill_stages(f, tab, coef, combine, tc, h, t_stage_end, dt, z, t_options, ks);
      auto [y1, err_sq] = rk_solution_error(z, ks, coef.b, coef.e, dt, control.rtol, control.atol);
      const double ratio = std::sqrt(err_sq.item<double>() / std::max<int64_t>(n, 1));
      if (std::isnan(ratio)) fail_non_finite("the solution", tc, h);
      const bool accepted = ratio <= 1.0;
      if (accepted) {
        at::Tensor f1 = tab.fsal ? ks.back() : f(at::scalar_tensor(t_stage_end, t_options), y1);
        StepRecord step{tc, h, t_first, t_stage_end, z, {}};
        std::vector<double> thetas;
        bool at_end = false;
        for (; j < T && direction * (times[j] - t_next) <= 0; ++j) {
          at_end = times[j] == t_next;
          const double theta = at_end ? 1.0 : (times[j] - tc) / h;
          if (!at_end) thetas.push_back(theta);
          if (record) step.obs.emplace_back(j, theta);
        }
        if (!thetas.empty()) chunks.push_back(interpolate(tab, thetas, h, z, y1, ks, f1));
        if (at_end) chunks.push_back(y1.unsqueeze(0));
        if (record) r.steps.push_back(std::move(step));
        z = y1;
        ks.assign(1, hits_knot ? f(at::scalar_tensor(std::nextafter(t_next, t_next + h), t_options), y1)
                               : f1);
        t_first = hits_knot ? std::nextafter(t_next, t_next + h) : t_next;
        tc = t_next;
        ++r.stats.accepted;
      } else {
        ++r.stats.rejected;
      }
      h_abs = controller.next(h_try, ratio, accepted);
    }
  }
  r.ys = at::cat(chunks);
  r.stats = meter.finish(r.stats.accepted, r.stats.rejected);
  return r;
}

AdaptiveAdjointResult solve_adaptive_adjoint(Dynamics& f, const at::Tensor& t,
                                             const at::Tensor& ys, const at::Tensor& grad_ys,
                                             const Tableau& tab, const StepControl& control,
                                             bool seminorm, bool need_t) {
  const SolveMeter meter(f);
  const std::vector<double> times = host_times(t);
  const int64_t T = static_cast<int64_t>(times.size());
  const at::TensorOptions t_options = t.options().requires_grad(false);
  const at::TensorOptions z_options = ys.options().requires_grad(false);
  const Combiner combine(/*differentiable=*/false);
  const StageCoefficients coef(tab);
  Controller controller(control, tab.order);
  const std::vector<at::Tensor>& params = f.params();
  AdaptiveAdjointResult r;

  at::Tensor z = ys[T - 1], a = grad_ys[T - 1];
  at::Tensor a_t = at::zeros_like(t[0]);
  std::vector<at::Tensor> a_params;
  for (const at::Tensor& p : params) a_params.push_back(at::zeros_like(p));
  std::vector<at::Tensor> grad_t(need_t ? T : 0);
  for (at::Tensor& g : grad_t) g = at::zeros_like(t[0]);
  // dL/dt_i = dL/dz(t_i) . f(z_i, t_i) for i >= 1; the running time adjoint drops by it.
  auto observe_time = [&](int64_t i) {
    if (!need_t || i == 0) return;
    at::Tensor direct =
        (grad_ys[i] * f(at::scalar_tensor(times[i], t_options), ys[i])).sum().to(t.scalar_type());
    grad_t[i] = direct;
    a_t.sub_(direct);
  };
  observe_time(T - 1);

  if (T > 1) {
    const double direction = times[0] >= times[T - 1] ? 1.0 : -1.0;  // backwards in time
    double tc = times[T - 1];
    // The first stage: f and the products a . df/dz, a . df/dt, a . df/dtheta at (tc, z, a).
    // FSAL methods reuse the last stage of an accepted step (it sits at (t1, z1, a1)).
    VectorJacobianProducts first = f.vjp(at::scalar_tensor(tc, t_options), z, a, need_t);
    double h_abs = control.first_step > 0
                       ? control.first_step
                       : initial_step(f, tc, z, first.f, t_options, tab.order, control, direction);
    for (int64_t i = T - 1; i >= 1; --i) {
      const double target = times[i - 1];
      while (tc != target) {
        h_abs = std::min(h_abs, control.max_step);
        const double knot = next_knot(control.step_t, tc, direction);
        const double stop = direction * (knot - target) < 0 ? knot : target;
        const bool hits_stop = reaches(tc, stop, h_abs);
        const double h_try = hits_stop ? std::abs(stop - tc) : h_abs;
        check_step(control, r.stats, tc, h_try, direction);
        const double h = direction * h_try;
        const at::Tensor dt = at::scalar_tensor(h, z_options);
        const bool on_knot = hits_stop && stop != target;
        const double t_end = hits_stop ? (on_knot ? std::nextafter(stop, tc) : stop) : tc + h;

        // Stages of [z, a]: kz = f, kv = a . df/dz (a's derivative is -kv).
        std::vector<at::Tensor> kz{first.f}, kv{first.wz.defined() ? first.wz : at::zeros_like(a)};
        std::vector<VectorJacobianProducts> stages{first};
        for (int s = 1; s < tab.stages; ++s) {
          at::Tensor zs = combine(z, kz, coef.a[s], dt);
          at::Tensor as = combine(a, kv, coef.minus_a[s], dt);
          stages.push_back(
              f.vjp(at::scalar_tensor(stage_clock(tab, s, tc, h, t_end), t_options), zs, as, need_t));
          kz.push_back(stages.back().f);
          kv.push_back(stages.back().wz.defined() ? stages.back().wz : at::zeros_like(a));
        }
        auto [z1, sq_z] = rk_solution_error(z, kz, coef.b, coef.e, dt, control.rtol, control.atol);
        auto [a1, sq_a] =
            rk_solution_error(a, kv, coef.minus_b, coef.minus_e, dt, control.rtol, control.atol);
        // A mixed norm, as torchdiffeq's: the largest of the RMS ratios of z, of a and
        // (full norm) of each parameter's adjoint, so that no part dilutes another.
        std::vector<at::Tensor> mean_sq{sq_z / static_cast<double>(std::max<int64_t>(z.numel(), 1)),
                                        sq_a / static_cast<double>(std::max<int64_t>(a.numel(), 1))};
        // The parameter adjoint's own update and error estimate, outside the state:
        // dtheta = -dt * sum_j b_j (a_j . df/dtheta), err = -dt * sum_j e_j (...).
        std::vector<at::Tensor> d_params(params.size());
        for (size_t p = 0; p < params.size(); ++p) {
          at::Tensor upd = at::zeros_like(a_params[p]), err = at::zeros_like(a_params[p]);
          for (int s = 0; s < tab.stages; ++s) {
            if (!stages[s].wp[p].defined()) continue;
            if (coef.b[s] != 0.0) upd.add_(stages[s].wp[p], -h * coef.b[s]);
            if (!seminorm && coef.e[s] != 0.0) err.add_(stages[s].wp[p], -h * coef.e[s]);
          }
          if (!seminorm && err.numel() > 0) {
            const at::Tensor new_p = a_params[p] + upd;
            const at::Tensor scale = param_tol(control.atol, err) +
                                     param_tol(control.rtol, err) *
                                         a_params[p].abs().maximum(new_p.abs());
            mean_sq.push_back((err / scale).pow(2).mean().to(at::kDouble));
          }
          d_params[p] = std::move(upd);
        }
        const double ratio = std::sqrt(at::stack(mean_sq).max().item<double>());
        if (std::isnan(ratio)) fail_non_finite("the adjoint solve", tc, h);
        const bool accepted = ratio <= 1.0;
        if (accepted) {
          for (size_t p = 0; p < params.size(); ++p) a_params[p].add_(d_params[p]);
          if (need_t) {
            for (int s = 0; s < tab.stages; ++s) {
              if (stages[s].wt.defined() && coef.b[s] != 0.0) a_t.sub_(stages[s].wt, h * coef.b[s]);
            }
          }
          z = z1;
          a = a1;
          tc = hits_stop ? stop : tc + h;
          ++r.stats.accepted;
          if (tab.fsal && !on_knot) {
            first = stages.back();
          } else if (tc != target) {
            const double t_first = on_knot ? std::nextafter(tc, tc + h) : tc;
            first = f.vjp(at::scalar_tensor(t_first, t_options), z, a, need_t);
          }
        } else {
          ++r.stats.rejected;
        }
        h_abs = controller.next(h_try, ratio, accepted);
      }
      // The jump at t_{i-1}: restart from the stored forward state, add dL/dz(t_{i-1}).
      z = ys[i - 1];
      a = a + grad_ys[i - 1];
      observe_time(i - 1);
      if (i > 1) first = f.vjp(at::scalar_tensor(tc, t_options), z, a, need_t);
    }
  }
  r.grad_y0 = a;
  if (need_t) {
    grad_t[0] = a_t;
    r.grad_t = at::stack(grad_t);
  }
  r.grad_params = std::move(a_params);
  r.stats = meter.finish(r.stats.accepted, r.stats.rejected);
  return r;
}

AdaptiveAdjointResult solve_checkpoint_adjoint(Dynamics& f, const at::Tensor& grad_ys,
                                               const std::vector<StepRecord>& steps,
                                               const Tableau& tab, const at::Tensor& t) {
  const SolveMeter meter(f);
  const at::TensorOptions t_options = t.options().requires_grad(false);
  const Combiner combine(/*differentiable=*/true);
  const StageCoefficients coef(tab);
  const std::vector<at::Tensor>& params = f.params();
  AdaptiveAdjointResult r;
  std::vector<at::Tensor> a_params;
  for (const at::Tensor& p : params) a_params.push_back(at::zeros_like(p));

  at::Tensor a = at::zeros_like(grad_ys[0]);
  for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
    c10::AutoGradMode enable_grad(true);
    at::Tensor z0 = step->z0.detach().requires_grad_(true);
    const at::Tensor dt = at::scalar_tensor(step->h, z0.options().requires_grad(false));
    std::vector<at::Tensor> ks{f(at::scalar_tensor(step->t_first, t_options), z0)};
    fill_stages(f, tab, coef, combine, step->t0, step->h, step->t_stage_end, dt, z0, t_options, ks);
    at::Tensor y1 = combine(z0, ks, coef.b, dt);
    // Cotangents: dL/dy1 is a (from later steps) plus the observation at the step's
    // end; the interpolated observations inside the step get theirs in one batch.
    std::vector<at::Tensor> outputs{y1}, cotangents{a};
    std::vector<double> thetas;
    std::vector<at::Tensor> inside;
    for (const auto& [j, theta] : step->obs) {
      if (theta == 1.0) {
        cotangents[0] = cotangents[0] + grad_ys[j];
      } else {
        thetas.push_back(theta);
        inside.push_back(grad_ys[j]);
      }
    }
    if (!thetas.empty()) {
      at::Tensor f1 = tab.fsal ? ks.back() : f(at::scalar_tensor(step->t_stage_end, t_options), y1);
      outputs.push_back(interpolate(tab, thetas, step->h, z0, y1, ks, f1));
      cotangents.push_back(at::stack(inside));
    }
    std::vector<at::Tensor> inputs{z0};
    inputs.insert(inputs.end(), params.begin(), params.end());
    std::vector<at::Tensor> grads = torch::autograd::grad(outputs, inputs, cotangents,
                                                          /*retain_graph=*/false,
                                                          /*create_graph=*/false,
                                                          /*allow_unused=*/true);
    a = grads[0].defined() ? grads[0] : at::zeros_like(a);
    for (size_t p = 0; p < params.size(); ++p) {
      if (grads[p + 1].defined()) a_params[p].add_(grads[p + 1]);
    }
    ++r.stats.accepted;
  }
  r.grad_y0 = a + grad_ys[0];
  r.grad_params = std::move(a_params);
  r.stats = meter.finish(r.stats.accepted, r.stats.rejected);
  return r;
}

}  // namespace neuralode
