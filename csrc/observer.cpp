#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "observer.h"

#include <ATen/ExpandUtils.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <optional>

#include "dense_output.h"
#include "stages.h"

namespace neuralode {

// ---------------------------------------------------------------- forward outputs

void OutputObserver::begin(System& system) {
  chunks_.push_back(static_cast<ForwardSystem&>(system).z().unsqueeze(0));
}

void OutputObserver::on_step(const Step& step, System& system) {
  auto& fs = static_cast<ForwardSystem&>(system);
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
  if (tape_ != nullptr) {
    rec.step = step;
    rec.z0 = z0;
    tape_->steps.push_back(std::move(rec));
  }
}

void OutputObserver::on_stop(int64_t, System& system) {
  chunks_.push_back(static_cast<ForwardSystem&>(system).z().unsqueeze(0));
}

at::Tensor OutputObserver::outputs() const { return at::cat(chunks_); }

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

// ---------------------------------------------------------------- replay jumps

void ReplayObserver::on_stop(int64_t obs, System& system) {
  auto& replay = static_cast<ReplaySystem&>(system);
  replay.jump(grad_ys_[obs]);
  watch_.record(obs, replay.a());
}

}  // namespace neuralode
