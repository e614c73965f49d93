#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "observer.h"

#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "dense_output.h"
#include "stages.h"

namespace neuralode {

// ---------------------------------------------------------------- forward outputs

void OutputObserver::begin(System& system) {
  auto& fs = static_cast<ForwardSystem&>(system);
  chunks_.push_back(fs.z().unsqueeze(0));
  if (event_ == nullptr) return;
  const at::Tensor z0 = fs.z().detach();
  const double tau0 = clock_ != nullptr ? clock_->at(0) : t_[0].item<double>();
  const int64_t rows = event_->per_sample ? z0.size(0) : 1;
  at::Tensor g0;
  {
    c10::NoGradGuard no_grad;
    g0 = event_->fn(time_tensor(std::vector<double>(rows, tau0), z0), z0);
  }
  search_ = std::make_unique<EventSearch>(*event_, g0, rows);
  event_tau_.assign(rows, std::numeric_limits<double>::quiet_NaN());
  for (int64_t r : search_->found_at_start()) event_tau_[r] = tau0;
  if (event_->per_sample) {
    event_rows_ = z0.clone();
  } else if (search_->done()) {
    chunks_.push_back(fs.z().unsqueeze(0));  // g(t0, y0) = 0: the event is at the start
  }
}

at::Tensor OutputObserver::time_tensor(const std::vector<double>& taus, const at::Tensor& like) const {
  const at::TensorOptions options = like.options().requires_grad(false);
  if (!event_->per_sample) return at::scalar_tensor(taus.at(0), options);
  return host_tensor(taus, options);
}

at::Tensor OutputObserver::state_at(const Step& step, ForwardSystem& fs, const at::Tensor& f1,
                                    const std::vector<double>& thetas, bool per_row) const {
  const at::Tensor &z0 = fs.z(), &z1 = fs.z1();
  if (fs.tableau().adaptive) {
    if (per_row) {
      std::vector<int64_t> rows(thetas.size());
      for (size_t r = 0; r < rows.size(); ++r) rows[r] = static_cast<int64_t>(r);
      return interpolate_rows(fs.tableau(), rows, thetas, std::vector<double>(thetas.size(), step.dtau), z0,
                              z1, fs.stages(), f1);
    }
    return interpolate(fs.tableau(), {thetas.at(0)}, step.dtau, z0, z1, fs.stages(), f1)[0];
  }
  const at::Tensor theta = per_row ? time_tensor(thetas, z0) : at::scalar_tensor(thetas.at(0), z0.options());
  return cubic_ ? interpolate_cubic(z0, z1, fs.stages()[0], f1, theta, step.dt)
                : interpolate_linear(z0, z1, theta);
}

bool OutputObserver::locate_events(const Step& step, ForwardSystem& fs, TapeStep& rec) {
  const at::Tensor z1 = fs.z1().detach();
  const bool per_sample = event_->per_sample;
  std::vector<int64_t> rows;
  {
    c10::NoGradGuard no_grad;
    // g at the step's end (its own time, not a knot's nudged one), in the state's dtype.
    at::Tensor t1 = step.host_times ? at::scalar_tensor(step.tau0 + step.dtau, z1.options())
                                    : end_time(step, t_.options()).detach().to(z1.scalar_type());
    if (per_sample) t1 = t1.expand({z1.size(0)});
    rows = search_->crossed(event_->fn(t1, z1));
  }
  if (rows.empty()) {
    search_->advance();
    return false;
  }
  // The step on the host: where it starts and how long it is (fixed steps: one read).
  const double tau0 = step.host_times ? step.tau0 : step.t0.item<double>();
  const double span = step.host_times ? step.dtau : step.h.item<double>();
  // f at the step's end (FSAL: its last stage) for the interpolant, with the solve's
  // graph: the output at the event is differentiated through it.
  const bool need_f1 = fs.tableau().adaptive || cubic_;
  const at::Tensor f1 = need_f1 ? fs.f_end(step) : at::Tensor();
  auto probe = [&](const std::vector<double>& thetas) {
    c10::NoGradGuard no_grad;
    std::vector<double> taus(thetas.size());
    for (size_t i = 0; i < thetas.size(); ++i) taus[i] = tau0 + thetas[i] * span;
    const at::Tensor y = state_at(step, fs, f1, thetas, per_sample);
    return event_values(event_->fn(time_tensor(taus, y), y), search_->rows());
  };
  // The round-off of the times event_fn sees (the state's dtype: a float32 model sees
  // float32 times), relative to the step: no bracket can be finer.
  const double eps = z1.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                     : std::numeric_limits<float>::epsilon();
  const double resolution = 2 * eps * std::max(std::abs(tau0), std::abs(tau0 + span)) / std::abs(span);
  const std::vector<double> roots = search_->refine(rows, probe, resolution);
  search_->advance();
  if (per_sample) {
    std::vector<double> thetas(search_->rows(), 1.0);
    for (size_t i = 0; i < rows.size(); ++i) {
      thetas[rows[i]] = roots[i];
      event_tau_[rows[i]] = tau0 + roots[i] * span;
    }
    c10::NoGradGuard no_grad;
    const at::Tensor index = host_index(rows, event_rows_.device());
    event_rows_.index_copy_(0, index, state_at(step, fs, f1, thetas, true).index_select(0, index));
    return false;
  }
  // One event: the second output, inside this step as an observation there would be.
  const double theta = roots[0];
  event_tau_[0] = tau0 + theta * span;
  if (fs.tableau().adaptive) {
    rec.thetas.push_back(theta);
    chunks_.push_back(interpolate(fs.tableau(), rec.thetas, step.dtau, fs.z(), fs.z1(), fs.stages(), f1));
    return true;
  }
  at::Tensor th;
  {
    std::optional<c10::AutoGradMode> graph;
    if (tape_ != nullptr && tape_->time_graph) graph.emplace(true);
    th = (at::scalar_tensor(event_tau_[0], t_.options().requires_grad(false)) - step.t0) / step.h;
  }
  const at::Tensor y = cubic_ ? interpolate_cubic(fs.z(), fs.z1(), fs.stages()[0], f1, th, step.dt)
                              : interpolate_linear(fs.z(), fs.z1(), th);
  chunks_.push_back(y.unsqueeze(0));
  rec.lin_thetas.push_back(std::move(th));
  return true;
}

at::Tensor OutputObserver::event_time() const {
  TORCH_CHECK(search_ != nullptr, "internal: no event search in this solve");
  const at::TensorOptions options = t_.options().requires_grad(false);
  if (!event_->per_sample) return at::scalar_tensor(event_tau_.at(0), options);
  return host_tensor(event_tau_, options);
}

void OutputObserver::on_sample_step(const Step& step, ForwardSystem& fs) {
  if (tape_ != nullptr) {
    TapeStep rec;
    rec.step = step;
    rec.z0 = fs.z();
    tape_->steps.push_back(std::move(rec));
  }
  if (step.sample_obs.empty()) return;
  const int64_t B = fs.z().size(0);
  // Every observation the step serves, in one batched product (a row may serve several).
  std::vector<int64_t> rows;
  std::vector<double> thetas, hs;
  for (const SampleObs& o : step.sample_obs) {
    rows.push_back(o.row);
    thetas.push_back(o.theta);
    hs.push_back(step.row_h[o.row]);
    sample_index_.push_back(o.obs * B + o.row);
  }
  chunks_.push_back(interpolate_rows(fs.tableau(), rows, thetas, hs, fs.z(), fs.z1(), fs.stages(), fs.f_end(step)));
}

void OutputObserver::on_step(const Step& step, System& system) {
  auto& fs = static_cast<ForwardSystem&>(system);
  if (step.row_errors) {
    on_sample_step(step, fs);
    return;
  }
  const at::Tensor& z0 = fs.z();
  TapeStep rec;
  if (!step.inner.empty()) {
    if (fs.tableau().adaptive) {
      // The method's dense output, at theta = (t_j - t0) / h on the planner's clock.
      for (int64_t j : step.inner) rec.thetas.push_back((clock_->at(j) - step.tau0) / step.dtau);
      chunks_.push_back(interpolate(fs.tableau(), rec.thetas, step.dtau, z0, fs.z1(), fs.stages(),
                                    fs.f_end(step)));
    } else {
      // Inside a fixed step, at theta = (t_j - t0) / h: linear, or cubic Hermite with f at
      // both ends (stage 0 as the step sampled it, f(t1, z1) evaluated once for the step).
      const at::Tensor f1 = cubic_ ? fs.f_end(step) : at::Tensor();
      for (int64_t j : step.inner) {
        at::Tensor theta;
        {
          // Recorded for a replay that differentiates the times: with their graph.
          std::optional<c10::AutoGradMode> graph;
          if (tape_ != nullptr && tape_->time_graph) graph.emplace(true);
          theta = (t_[j] - step.t0) / step.h;
        }
        at::Tensor y = cubic_ ? interpolate_cubic(z0, fs.z1(), fs.stages()[0], f1, theta, step.dt)
                              : interpolate_linear(z0, fs.z1(), theta);
        chunks_.push_back(y.unsqueeze(0));
        rec.lin_thetas.push_back(std::move(theta));
      }
    }
  }
  const bool event_inside = search_ != nullptr && !search_->done() && locate_events(step, fs, rec);
  if (tape_ != nullptr) {
    rec.step = step;
    if (event_inside) rec.step.inner = {1};  // the event is output 1
    rec.z0 = z0;
    tape_->steps.push_back(std::move(rec));
  }
}

void OutputObserver::on_stop(int64_t, System& system) {
  chunks_.push_back(static_cast<ForwardSystem&>(system).z().unsqueeze(0));
}

at::Tensor OutputObserver::outputs() const {
  if (event_ != nullptr && event_->per_sample) return at::cat({chunks_.at(0), event_rows_.unsqueeze(0)});
  if (per_sample_) {
    // Per-sample steps: the rows were served in the order their steps reached them;
    // each goes to its place (obs, row) at once (one differentiable scatter).
    const at::Tensor y0 = chunks_.at(0).squeeze(0);
    const int64_t B = y0.size(0), T = t_.size(0);
    std::vector<int64_t> index(B);
    for (int64_t b = 0; b < B; ++b) index[b] = b;  // observation 0: y0 itself
    index.insert(index.end(), sample_index_.begin(), sample_index_.end());
    std::vector<at::Tensor> rows{y0};
    rows.insert(rows.end(), chunks_.begin() + 1, chunks_.end());
    const at::Tensor values = at::cat(rows);
    TORCH_CHECK(values.size(0) == T * B, "internal: every observation of every sample is served once");
    const at::Tensor where = host_index(index, values.device());
    std::vector<int64_t> shape{T};
    shape.insert(shape.end(), y0.sizes().begin(), y0.sizes().end());
    return at::zeros_like(values).index_put({where}, values).reshape(shape);
  }
  return at::cat(chunks_);
}

// ---------------------------------------------------------------- adjoint jumps

AdjointObserver::AdjointObserver(Dynamics& f, const at::Tensor& t, const at::Tensor& ys,
                                 const at::Tensor& grad_ys, bool need_t)
    : f_(f), t_(t), ys_(ys), grad_ys_(grad_ys), need_t_(need_t) {
  if (need_t_) grad_t_.assign(t.size(0), at::zeros_like(t[0]));
}

void AdjointObserver::on_stop(int64_t i, System& system) {
  auto& adj = static_cast<AdjointSystem&>(system);
  adj.jump(ys_[i], grad_ys_[i]);
  watch_.record(i, adj.a());
  if (!need_t_ || i == 0) return;
  // dL/dz(t_i) . f(t_i, z_i): summed over the state, per sample when times are.
  const at::Tensor t_i = t_[i];
  at::Tensor prod = (grad_ys_[i] * f_(t_i, ys_[i])).to(t_i.scalar_type());
  at::Tensor direct = t_i.dim() == 0 ? prod.sum() : at::sum_to(prod, rows_view(t_i, prod.dim()).sizes()).reshape_as(t_i);
  grad_t_[i] = direct;
  adj.add_time(-direct);
}

at::Tensor AdjointObserver::grad_t(const at::Tensor& a_t) {
  grad_t_[0] = a_t;
  return at::stack(grad_t_);
}

// ---------------------------------------------------------------- per-sample adjoint jumps

SampleAdjointObserver::SampleAdjointObserver(Dynamics& f, const at::Tensor& t, const at::Tensor& ys,
                                             const at::Tensor& grad_ys, bool need_t)
    : ys_(ys), grad_ys_(grad_ys), need_t_(need_t) {
  if (!need_t_) return;
  const int64_t T = t.size(0);
  std::vector<at::Tensor> rows{at::zeros_like(t[0])};
  for (int64_t i = 1; i < T; ++i) {
    const at::Tensor prod = (grad_ys[i] * f(t[i], ys[i])).to(t.scalar_type());
    rows.push_back(by_rows(prod).sum(1, /*keepdim=*/true));
  }
  direct_ = at::stack(rows);
}

void SampleAdjointObserver::begin(System& system) {
  auto& adj = static_cast<AdjointSystem&>(system);
  const int64_t T = ys_.size(0), B = ys_.size(1);
  std::vector<int64_t> all(B);
  for (int64_t b = 0; b < B; ++b) all[b] = b;
  const at::Tensor index = host_index(all, ys_.device());
  adj.jump_rows(index, ys_[T - 1], grad_ys_[T - 1], need_t_ && T > 1 ? direct_[T - 1] : at::Tensor());
}

void SampleAdjointObserver::after_commit(const Step& step, System& system) {
  if (step.sample_obs.empty()) return;
  auto& adj = static_cast<AdjointSystem&>(system);
  const int64_t B = ys_.size(1);
  std::vector<int64_t> rows, flat;
  for (const SampleObs& o : step.sample_obs) {
    rows.push_back(o.row);
    flat.push_back(o.obs * B + o.row);
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  const at::Tensor index = host_index(rows, ys_.device());
  const at::Tensor where = host_index(flat, ys_.device());
  auto pick = [&](const at::Tensor& x) { return x.flatten(0, 1).index_select(0, where); };
  at::Tensor direct;
  if (need_t_) {
    // Observation 0 has no direct term: dL/dt_0 is the running time adjoint.
    std::vector<double> keep;
    for (const SampleObs& o : step.sample_obs) keep.push_back(o.obs > 0 ? 1.0 : 0.0);
    const at::Tensor mask = host_tensor(keep, direct_.options()).reshape({n, 1});
    direct = pick(direct_) * mask;
  }
  adj.jump_rows(index, pick(ys_), pick(grad_ys_), direct);
}

at::Tensor SampleAdjointObserver::grad_t(const at::Tensor& a_t) const {
  at::Tensor g = direct_.clone();
  g[0] = a_t;
  return g;
}

// ---------------------------------------------------------------- replay jumps

void ReplayObserver::on_stop(int64_t obs, System& system) {
  auto& replay = static_cast<ReplaySystem&>(system);
  replay.jump(grad_ys_[obs]);
  watch_.record(obs, replay.a());
}

}  // namespace neuralode
