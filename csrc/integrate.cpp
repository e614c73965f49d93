// Fixed-step forward and adjoint loops. Both walk a list of `Segment`s (runs of
// equal steps between two knots); the Runge-Kutta stages go through the fused
// stage_combine op, the dynamics through the `Dynamics` interface.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "integrate.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/ceil.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "stage_combine.h"
#include "stepper.h"

namespace neuralode {
namespace {

// A run of n_steps equal steps h starting at time t0. `exact` lists the
// observation indices that sit at the run's end; `interp` those strictly inside
// a one-step run, served by linear interpolation (uniform grid only).
struct Segment {
  at::Tensor t0;
  at::Tensor h;
  int64_t n_steps = 0;
  std::vector<int64_t> exact;
  std::vector<int64_t> interp;
};

bool per_sample(const at::Tensor& t) { return t.dim() == 3; }

// n_i = ceil(max |t_{i+1} - t_i| / max_step), computed with the same tensor
// arithmetic as the reference so that both take the same number of steps.
std::vector<int64_t> subdivision_counts(const at::Tensor& t, const StepSpec& spec) {
  const int64_t T = t.size(0);
  std::vector<int64_t> counts(std::max<int64_t>(T - 1, 0), 1);
  if (T < 2 || !std::isfinite(spec.value)) return counts;
  at::Tensor ratio = (t.narrow(0, 1, T - 1) - t.narrow(0, 0, T - 1)).abs().div(spec.value);
  at::Tensor worst = ratio.reshape({T - 1, -1}).amax(1).to(at::kDouble).cpu();
  const double* w = worst.data_ptr<double>();
  int64_t total = 0;
  for (int64_t i = 0; i < T - 1; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(w[i]), "t: interval ", i, " has a non-finite length");
    counts[i] = static_cast<int64_t>(std::ceil(w[i]));
    total += counts[i];
    TORCH_CHECK_VALUE(total <= spec.max_num_steps, "the fixed-step solve needs more than ",
                      spec.max_num_steps, " steps (max_step=", spec.value,
                      "); raise options['max_num_steps'] or max_step");
  }
  return counts;
}

// Subdivided intervals, walked forwards (t_0 -> t_{T-1}) or backwards.
std::vector<Segment> subdivided_segments(const at::Tensor& t, const StepSpec& spec,
                                         bool backwards) {
  const int64_t T = t.size(0);
  std::vector<int64_t> counts = subdivision_counts(t, spec);
  std::vector<Segment> segs;
  segs.reserve(counts.size());
  for (int64_t i = 0; i + 1 < T; ++i) {
    const int64_t from = backwards ? T - 1 - i : i;
    const int64_t to = backwards ? from - 1 : from + 1;
    const int64_t n = counts[backwards ? to : from];
    Segment s;
    s.t0 = t[from];
    s.h = (t[to] - t[from]).div(std::max<int64_t>(n, 1));
    s.n_steps = n;
    s.exact.push_back(to);
    segs.push_back(std::move(s));
  }
  return segs;
}

// torchdiffeq's grid: t_0 + k * step_size (k = 0 .. ceil(|t_end - t_0| / step) ),
// the last point replaced by t_end. Differentiable w.r.t. t_0 and t_end.
at::Tensor uniform_grid(const at::Tensor& t, const StepSpec& spec) {
  const int64_t T = t.size(0);
  at::Tensor start = t[0], end = t[T - 1];
  const double direction = (end - start).item<double>() >= 0 ? 1.0 : -1.0;
  const int64_t niters =
      at::ceil((end - start).abs().div(spec.value).add(1)).item<int64_t>();
  TORCH_CHECK_VALUE(niters - 1 <= spec.max_num_steps, "step_size=", spec.value, " needs ",
                    niters - 1, " steps, more than max_num_steps=", spec.max_num_steps,
                    "; raise options['max_num_steps'] or step_size");
  at::Tensor head =
      at::arange(std::max<int64_t>(niters - 1, 1), t.options()).mul(direction * spec.value) + start;
  return at::cat({head, end.reshape({1})});
}

std::vector<Segment> uniform_forward_segments(const at::Tensor& t, const StepSpec& spec) {
  at::Tensor grid = uniform_grid(t, spec);
  at::Tensor grid_host = grid.detach().to(at::kDouble).cpu();
  at::Tensor t_host = t.detach().to(at::kDouble).cpu();
  const double* g = grid_host.data_ptr<double>();
  const double* tv = t_host.data_ptr<double>();
  const double dir = g[grid.size(0) - 1] >= g[0] ? 1.0 : -1.0;
  const int64_t T = t.size(0);
  std::vector<Segment> segs;
  int64_t j = 1;
  for (int64_t k = 0; k + 1 < grid.size(0); ++k) {
    Segment s;
    s.t0 = grid[k];
    s.h = grid[k + 1] - grid[k];
    s.n_steps = 1;
    while (j < T && dir * (g[k + 1] - tv[j]) >= 0) {
      (tv[j] == g[k + 1] ? s.exact : s.interp).push_back(j);
      ++j;
    }
    segs.push_back(std::move(s));
  }
  return segs;
}

// Backwards over the uniform grid with the observation times inserted as
// knots, so that every jump a += dL/dz(t_i) happens exactly at t_i.
std::vector<Segment> uniform_backward_segments(const at::Tensor& t, const StepSpec& spec) {
  at::Tensor grid_host = uniform_grid(t.detach(), spec).to(at::kDouble).cpu();
  at::Tensor t_host = t.detach().to(at::kDouble).cpu();
  const double* g = grid_host.data_ptr<double>();
  const double* tv = t_host.data_ptr<double>();
  const int64_t T = t.size(0), G = grid_host.size(0);
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
  for (size_t i = 0; i + 1 < knots.size(); ++i) {
    Segment s;
    s.t0 = at::scalar_tensor(knots[i].first, t.options());
    s.h = at::scalar_tensor(knots[i + 1].first, t.options()) - s.t0;
    s.n_steps = 1;
    if (knots[i + 1].second >= 0) s.exact.push_back(knots[i + 1].second);
    segs.push_back(std::move(s));
  }
  return segs;
}

std::vector<Segment> make_segments(const at::Tensor& t, const StepSpec& spec, bool backwards) {
  if (spec.kind == StepSpec::Kind::kSubdivide) return subdivided_segments(t, spec, backwards);
  return backwards ? uniform_backward_segments(t, spec) : uniform_forward_segments(t, spec);
}

// One explicit Runge-Kutta step: z + dt * sum_j b_j k_j with
// k_i = f(t + c_i h, z + dt * sum_{j<i} a_ij k_j).
at::Tensor rk_step(Dynamics& f, const Tableau& tab, const StageCoefficients& coef,
                   const Combiner& combine, const at::Tensor& t, const at::Tensor& h,
                   const at::Tensor& dt, const at::Tensor& z) {
  std::vector<at::Tensor> k;
  k.reserve(tab.stages);
  for (int i = 0; i < tab.stages; ++i) {
    at::Tensor zi = combine(z, k, coef.a[i], dt);
    k.push_back(f(stage_time(tab, i, t, h), zi));
  }
  return combine(z, k, coef.b, dt);
}

// dL/dz(t_i) . f(z_i, t_i): summed over the state, per sample when times are.
at::Tensor direct_time_term(Dynamics& f, const at::Tensor& t_i, const at::Tensor& z_i,
                            const at::Tensor& g_i) {
  at::Tensor prod = (g_i * f(t_i, z_i)).to(t_i.scalar_type());
  if (t_i.dim() == 0) return prod.sum();
  return prod.reshape({prod.size(0), -1}).sum(1, /*keepdim=*/true);
}

// The state of the backward solve.
struct AdjointState {
  at::Tensor z;                      // re-integrated state
  at::Tensor a;                      // dL/dz
  at::Tensor a_t;                    // running dL/dt_0 (t's shape of one time)
  std::vector<at::Tensor> a_params;  // dL/dtheta, accumulated outside the state
};

// One Runge-Kutta step of the augmented system
//   dz/dt = f,  da/dt = -a df/dz,  da_t/dt = -a df/dt,  da_theta/dt = -a df/dtheta
// from t over h (h < 0 walking backwards). Each stage takes one VJP with the
// cotangent dt * a_i, which is exact for per-sample steps as well; a_t and
// a_theta never feed back into f, so they are accumulated with the weights b
// and need no stage combinations.
void adjoint_step(Dynamics& f, const Tableau& tab, const StageCoefficients& coef,
                  const Combiner& combine, const at::Tensor& t, const at::Tensor& h,
                  const at::Tensor& dt, bool need_t, AdjointState& s) {
  std::vector<at::Tensor> kz, kv;  // f and dt * a_i . df/dz of each stage
  kz.reserve(tab.stages);
  kv.reserve(tab.stages);
  const at::Tensor dt_rows = rows_view(dt, s.a.dim());
  for (int i = 0; i < tab.stages; ++i) {
    at::Tensor zi = combine(s.z, kz, coef.a[i], dt);
    at::Tensor ai = combine(s.a, kv, coef.minus_a[i], at::Tensor());
    VectorJacobianProducts v = f.vjp(stage_time(tab, i, t, h), zi, ai * dt_rows, need_t);
    kz.push_back(v.f);
    kv.push_back(v.wz.defined() ? v.wz : at::zeros_like(ai));
    const double b = tab.b[i];
    if (b == 0.0) continue;
    if (need_t && v.wt.defined()) s.a_t.sub_(v.wt, b);
    for (size_t p = 0; p < s.a_params.size(); ++p) {
      if (v.wp[p].defined()) s.a_params[p].sub_(v.wp[p], b);
    }
  }
  s.z = combine(s.z, kz, coef.b, dt);
  s.a = combine(s.a, kv, coef.minus_b, at::Tensor());
}

}  // namespace

ForwardResult solve_forward(Dynamics& f, const at::Tensor& y0, const at::Tensor& t,
                            const Tableau& tableau, const StepSpec& spec, bool differentiable) {
  const SolveMeter meter(f);
  const int64_t T = t.size(0);
  int64_t steps = 0;
  const Combiner combine(differentiable);
  const StageCoefficients coef(tableau);
  std::vector<at::Tensor> out(T);
  out[0] = y0;
  at::Tensor z = y0;
  for (const Segment& seg : make_segments(t, spec, /*backwards=*/false)) {
    const at::Tensor dt = seg.h.to(y0.scalar_type());
    at::Tensor tk = seg.t0, z_start = z;
    for (int64_t k = 0; k < seg.n_steps; ++k) {
      if (k > 0) tk = tk + seg.h;  // accumulated, as the reference does
      z = rk_step(f, tableau, coef, combine, tk, seg.h, dt, z);
    }
    steps += seg.n_steps;
    for (int64_t j : seg.interp) {
      // Linear interpolation inside the step (torchdiffeq's fixed-grid output).
      at::Tensor slope = ((t[j] - seg.t0) / seg.h).to(y0.scalar_type());
      out[j] = z_start + rows_view(slope, y0.dim()) * (z - z_start);
    }
    for (int64_t j : seg.exact) out[j] = z;
  }
  return {at::stack(out), meter.finish(steps)};
}

AdjointResult solve_adjoint(Dynamics& f, const at::Tensor& t, const at::Tensor& ys,
                            const at::Tensor& grad_ys, const Tableau& tableau,
                            const StepSpec& spec, bool need_t) {
  const SolveMeter meter(f);
  const int64_t T = t.size(0);
  int64_t steps = 0;
  const Combiner combine(/*differentiable=*/false);
  const StageCoefficients coef(tableau);
  AdjointState s;
  s.z = ys[T - 1];
  s.a = grad_ys[T - 1];
  s.a_t = at::zeros_like(t[0]);
  for (const at::Tensor& p : f.params()) s.a_params.push_back(at::zeros_like(p));

  at::Tensor grad_t;
  std::vector<at::Tensor> grad_t_rows;
  if (need_t) {
    grad_t_rows.resize(T);
    for (int64_t i = 0; i < T; ++i) grad_t_rows[i] = at::zeros_like(t[0]);
  }
  // At an observation time t_i (i >= 1): dL/dt_i = dL/dz(t_i) . f(z_i, t_i),
  // and the running time adjoint drops by the same amount (Algorithm 1).
  auto observe_time = [&](int64_t i) {
    if (!need_t || i == 0) return;
    at::Tensor direct = direct_time_term(f, t[i], ys[i], grad_ys[i]);
    grad_t_rows[i] = direct;
    s.a_t.sub_(direct);
  };
  observe_time(T - 1);

  for (const Segment& seg : make_segments(t, spec, /*backwards=*/true)) {
    const at::Tensor dt = seg.h.to(ys.scalar_type());
    at::Tensor tk = seg.t0;
    for (int64_t k = 0; k < seg.n_steps; ++k) {
      if (k > 0) tk = tk + seg.h;
      adjoint_step(f, tableau, coef, combine, tk, seg.h, dt, need_t, s);
    }
    steps += seg.n_steps;
    for (int64_t j : seg.exact) {
      s.z = ys[j];  // restart from the stored forward state
      s.a = s.a + grad_ys[j];
      observe_time(j);
    }
  }
  AdjointResult r;
  r.grad_y0 = s.a;
  if (need_t) {
    grad_t_rows[0] = s.a_t;
    r.grad_t = at::stack(grad_t_rows);
  }
  r.grad_params = std::move(s.a_params);
  r.stats = meter.finish(steps);
  return r;
}

}  // namespace neuralode
