#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "system.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/index_add.h>
#include <ATen/ops/index_copy.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>

#include "dense_output.h"

namespace neuralode {
namespace {

// A tolerance for a parameter's adjoint: the state's when it is one value, else its
// largest (per-element tolerances are laid out like the state, not like theta).
at::Tensor param_tol(const at::Tensor& tol, const at::Tensor& like) {
  return (tol.numel() == 1 ? tol.reshape({}) : tol.amax()).to(like.scalar_type());
}

// The largest of some error ratios, NaN if any is (a non-finite step must be seen).
double largest(const std::vector<double>& ratios) {
  double worst = 0.0;
  for (double r : ratios) worst = std::isnan(r) || std::isnan(worst) ? NAN : std::max(worst, r);
  return worst;
}

}  // namespace

// ---------------------------------------------------------------- forward

ForwardSystem::ForwardSystem(Dynamics& f, const StepPlan& plan, const at::Tensor& y0,
                             const at::TensorOptions& t_options, bool differentiable)
    : f_(f), plan_(plan), loop_(*plan.tableau, differentiable), t_options_(t_options), z_(y0) {}

std::pair<at::Tensor, at::Tensor> ForwardSystem::start(const Step& step) {
  // A kept stage 0 serves while the step starts where it was sampled (fixed steps
  // carry NaN there, which matches nothing).
  if (!k0_.defined() || !(k0_tau_ == step.tau_first)) {
    k0_ = f_(stage_time(step, 0.0, t_options_), z_);
    k0_tau_ = step.tau_first;
  }
  return {z_, k0_};
}

double ForwardSystem::attempt(const Step& step) {
  start(step);
  f1_ = at::Tensor();
  st_.clear(1);
  st_.k[0].push_back(k0_);
  st_.factor.push_back(1.0);
  const std::vector<StagePart> parts{{z_, false, false}};
  loop_.run(step, t_options_, parts, st_,
            [&](int, const at::Tensor& time, const std::vector<at::Tensor>& x) {
              return std::vector<at::Tensor>{f_(time, x[0])};
            });
  if (step.row_errors) {
    // Per-sample steps: the end without the fused error sum, then one ratio per row.
    std::tie(z1_, row_ratios_) = loop_.finish_rows(step, parts[0], st_.k[0], st_.factor, plan_);
    return largest(row_ratios_);
  }
  auto [z1, error] = loop_.finish(step, parts[0], st_.k[0], st_.factor, plan_);
  z1_ = std::move(z1);
  return loop_.tableau().adaptive ? error_ratio(plan_, {error}) : 0.0;
}

at::Tensor ForwardSystem::f_end(const Step& step) {
  if (tableau().fsal) return st_.k[0].back();
  if (!f1_.defined()) f1_ = f_(end_time(step, t_options_), z1_);
  return f1_;
}

void ForwardSystem::commit(const Step& step) {
  at::Tensor last = tableau().fsal ? st_.k[0].back() : f1_;
  if (step.accept_rows.defined()) {
    // Per-sample steps: only the accepted rows move; the others keep their state and
    // their stage 0 (f where they still are).
    const at::Tensor moved = rows_view(step.accept_rows, z_.dim());
    z_ = at::where(moved, z1_, z_);
    k0_ = last.defined() && k0_.defined() ? at::where(moved, last, k0_) : at::Tensor();
    k0_tau_ = step.tau_last;
    return;
  }
  z_ = z1_;
  k0_ = last;  // f at the step's end (FSAL, or evaluated for the dense output), if any
  k0_tau_ = step.tau_last;
}

// ---------------------------------------------------------------- continuous adjoint

AdjointSystem::AdjointSystem(Dynamics& f, const StepPlan& plan, const at::Tensor& z,
                             const at::Tensor& t_row, const at::TensorOptions& t_options,
                             bool seminorm, bool need_t, bool differentiable)
    : f_(f),
      plan_(plan),
      loop_(*plan.tableau, differentiable),
      differentiable_(differentiable),
      t_options_(t_options),
      seminorm_(seminorm),
      need_t_(need_t),
      z_(z),
      a_(at::zeros_like(z)),
      a_t_(at::zeros_like(t_row)) {
  for (const at::Tensor& p : f.params()) a_params_.push_back(at::zeros_like(p));
}

void AdjointSystem::first_stage(const Step& step) {
  // Per-sample steps change each row's dt from try to try: the cotangent dt * a of a kept
  // stage 0 cannot be rescaled row by row inside dL/dtheta's batch sum, so it is taken anew.
  if (k0_valid_ && k0_tau_ == step.tau_first && !step.row_errors) return;
  const at::Tensor cotangent = a_ * rows_view(step.dt, a_.dim());
  // Per-sample steps: the parameter products wait for the accept/reject decision (commit).
  VectorJacobianProducts v = f_.vjp(stage_time(step, 0.0, t_options_), z_, cotangent, need_t_,
                                    /*retain=*/step.row_errors, /*with_params=*/!step.row_errors);
  k0_f_ = v.f;
  k0_wz_ = v.wz.defined() ? v.wz : at::zeros_like(a_);
  k0_side_ = {v.wt, std::move(v.wp), v.out, step.row_errors ? cotangent : at::Tensor()};
  k0_tau_ = step.tau_first;
  k0_dtau_ = step.dtau;
  k0_valid_ = true;
}

std::pair<at::Tensor, at::Tensor> AdjointSystem::start(const Step& step) {
  first_stage(step);
  return {z_, k0_f_};
}

double AdjointSystem::attempt(const Step& step) {
  first_stage(step);
  // The kept stage 0 holds the cotangent of a step of k0_dtau_: products with dt * a
  // are linear in dt, so it serves a step of another size rescaled.
  const double factor = std::isnan(step.dtau) ? 1.0 : step.dtau / k0_dtau_;
  st_.clear(2);
  st_.k[0].push_back(k0_f_);
  st_.k[1].push_back(k0_wz_);
  st_.factor.push_back(factor);
  side_.assign(1, k0_side_);
  // dz/dt = f, da/dt = -a df/dz: a's stages hold (dt a_i) df/dz, already times dt.
  const std::vector<StagePart> parts{{z_, false, false}, {a_, true, true}};
  loop_.run(step, t_options_, parts, st_,
            [&](int i, const at::Tensor& time, const std::vector<at::Tensor>& x) {
              const at::Tensor cotangent = x[1] * rows_view(step.dt, x[1].dim());
              // Per-sample steps: the graph is kept for commit's one parameter pass where
              // the stage enters the solution (b_i != 0); the error needs only the z products.
              const bool keep = step.row_errors && loop_.b()[i] != 0.0;
              VectorJacobianProducts v = f_.vjp(time, x[0], cotangent, need_t_, keep, !step.row_errors);
              side_.push_back({v.wt, std::move(v.wp), v.out, step.row_errors ? cotangent : at::Tensor()});
              return std::vector<at::Tensor>{v.f, v.wz.defined() ? v.wz : at::zeros_like(x[1])};
            });
  if (step.row_errors) {
    // Per-sample steps: each row's ratio on its own [z, a] (the shared dL/dtheta is left
    // out of every row's error: the seminorm), the largest returned.
    std::vector<double> rz, ra;
    std::tie(z1_, rz) = loop_.finish_rows(step, parts[0], st_.k[0], st_.factor, plan_);
    std::tie(a1_, ra) = loop_.finish_rows(step, parts[1], st_.k[1], st_.factor, plan_);
    row_ratios_.resize(rz.size());
    for (size_t b = 0; b < rz.size(); ++b) row_ratios_[b] = largest({rz[b], ra[b]});
    d_params_.clear();
    return largest(row_ratios_);
  }
  auto [z1, error_z] = loop_.finish(step, parts[0], st_.k[0], st_.factor, plan_);
  auto [a1, error_a] = loop_.finish(step, parts[1], st_.k[1], st_.factor, plan_);
  z1_ = std::move(z1);
  a1_ = std::move(a1);
  d_params_.clear();
  if (!loop_.tableau().adaptive) return 0.0;  // fixed step: no estimate

  // A mixed norm, as torchdiffeq's: the largest of the RMS ratios of z, of a and (full
  // norm) of each parameter's adjoint, so that no part dilutes another.
  std::vector<PartError> errors{std::move(error_z), std::move(error_a)};
  if (!seminorm_) {
    // dL/dtheta's update and error estimate, outside the state:
    // d = -sum_j b_j w_j (dt a_j . df/dtheta), err = -sum_j e_j w_j (...).
    const std::vector<double>& b = loop_.b();
    const std::vector<double>& e = loop_.e();
    for (size_t p = 0; p < a_params_.size(); ++p) {
      at::Tensor upd = at::zeros_like(a_params_[p]), err = at::zeros_like(a_params_[p]);
      for (size_t j = 0; j < side_.size(); ++j) {
        const at::Tensor& w = side_[j].wp[p];
        if (!w.defined()) continue;
        if (b[j] != 0.0) accumulate(upd, w, -b[j] * st_.factor[j]);
        if (e[j] != 0.0) err.add_(w.detach(), -e[j] * st_.factor[j]);
      }
      if (err.numel() > 0) {
        c10::NoGradGuard control_only;  // the error picks step sizes, it is not differentiated
        const at::Tensor a_p = a_params_[p].detach(), new_p = a_p + upd.detach();
        // A complex parameter: its scale from moduli (real), its error's square modulus.
        const at::Tensor size = a_p.abs().maximum(new_p.abs());
        const at::Tensor scale = param_tol(plan_.atol, size) + param_tol(plan_.rtol, size) * size;
        const at::Tensor q = err / scale;
        PartError pe;
        if (plan_.norm) {
          pe.scaled = q;
        } else {
          // Its mean, as a sum over one (a parameter's error is small and off the fast path).
          pe.add((q.is_complex() ? q.abs() : q).pow(2).mean().to(at::kDouble), 1);
        }
        errors.push_back(std::move(pe));
      }
      d_params_.push_back(std::move(upd));
    }
  }
  return error_ratio(plan_, errors);
}

void AdjointSystem::commit(const Step& step) {
  const std::vector<double>& b = loop_.b();
  if (step.row_errors) {
    // Per-sample steps: only the accepted rows move and add to dL/dt. dL/dtheta, a sum
    // over the batch, is taken here in one backward pass through the stages' kept graphs,
    // with the cotangents -b_j dt a_j of the accepted rows (a rejected row's are zeroed).
    const at::Tensor weight =
        step.accept_rows.defined() ? rows_view(step.accept_rows.to(a_.scalar_type()), a_.dim()) : at::Tensor();
    // The mask in dL/dt's dtype, formed once for all stages.
    at::Tensor t_weight;
    std::vector<at::Tensor> outs, ws;
    for (size_t j = 0; j < side_.size(); ++j) {
      if (b[j] == 0.0) continue;
      const double alpha = -b[j] * st_.factor[j];
      if (side_[j].out.defined()) {
        outs.push_back(side_[j].out);
        ws.push_back(weight.defined() ? side_[j].cotangent * (weight * alpha) : side_[j].cotangent * alpha);
      }
      if (need_t_ && side_[j].wt.defined()) {
        const at::Tensor& wt = side_[j].wt;
        if (weight.defined() && !t_weight.defined()) {
          t_weight = rows_view(step.accept_rows.to(wt.scalar_type()), wt.dim());
        }
        accumulate(a_t_, weight.defined() ? wt * t_weight : wt, alpha);
      }
    }
    const std::vector<at::Tensor> wp = f_.params_vjp(outs, ws);
    for (size_t p = 0; p < a_params_.size(); ++p) {
      if (wp[p].defined()) accumulate(a_params_[p], wp[p], 1.0);
    }
    if (step.accept_rows.defined()) {
      const at::Tensor moved = step.accept_rows;
      z_ = at::where(rows_view(moved, z_.dim()), z1_, z_);
      a_ = at::where(rows_view(moved, a_.dim()), a1_, a_);
    } else {
      z_ = z1_;
      a_ = a1_;
    }
    side_.clear();  // the kept graphs
    k0_side_ = AdjointStage();
    k0_valid_ = false;
    return;
  }
  if (!d_params_.empty()) {
    for (size_t p = 0; p < a_params_.size(); ++p) accumulate(a_params_[p], d_params_[p], 1.0);
  } else {
    for (size_t j = 0; j < side_.size(); ++j) {
      if (b[j] == 0.0) continue;
      for (size_t p = 0; p < a_params_.size(); ++p) {
        if (side_[j].wp[p].defined()) accumulate(a_params_[p], side_[j].wp[p], -b[j] * st_.factor[j]);
      }
    }
  }
  if (need_t_) {
    for (size_t j = 0; j < side_.size(); ++j) {
      if (side_[j].wt.defined() && b[j] != 0.0) accumulate(a_t_, side_[j].wt, -b[j] * st_.factor[j]);
    }
  }
  z_ = z1_;
  a_ = a1_;
  k0_valid_ = loop_.tableau().fsal;
  if (k0_valid_) {
    k0_f_ = st_.k[0].back();
    k0_wz_ = st_.k[1].back();
    k0_side_ = side_.back();
    k0_tau_ = step.tau_last;
    k0_dtau_ = step.dtau;
  }
}

std::vector<at::Tensor> AdjointSystem::callback_state() {
  std::vector<at::Tensor> out{z_.detach(), a_.detach(), a_t_.detach()};
  for (const at::Tensor& p : a_params_) out.push_back(p.detach());
  return out;
}

void AdjointSystem::accumulate(at::Tensor& acc, const at::Tensor& x, double alpha) const {
  // Recorded: out of place, so that autograd sees every partial sum.
  if (differentiable_) {
    acc = acc + x * alpha;
  } else {
    acc.add_(x, alpha);
  }
}

void AdjointSystem::add_time(const at::Tensor& x) { accumulate(a_t_, x, 1.0); }

void AdjointSystem::jump(const at::Tensor& z, const at::Tensor& grad_z) {
  z_ = z;
  a_ = a_ + grad_z;
  k0_valid_ = false;
}

void AdjointSystem::jump_rows(const at::Tensor& index, const at::Tensor& z_rows, const at::Tensor& grad_rows,
                              const at::Tensor& direct_rows) {
  z_ = z_.index_copy(0, index, z_rows);
  a_ = a_.index_add(0, index, grad_rows);
  if (need_t_ && direct_rows.defined()) a_t_ = a_t_.index_add(0, index, -direct_rows);
  k0_valid_ = false;
}

// ---------------------------------------------------------------- checkpoint replay

ReplaySystem::ReplaySystem(Dynamics& f, const Tape& tape, const at::Tensor& grad_ys,
                           const at::TensorOptions& t_options)
    : f_(f),
      tape_(tape),
      grad_ys_(grad_ys),
      loop_(*tape.tableau, /*differentiable=*/true),
      t_options_(t_options),
      a_(at::zeros_like(grad_ys[0])) {
  for (const at::Tensor& p : f.params()) a_params_.push_back(at::zeros_like(p));
}

std::pair<at::Tensor, at::Tensor> ReplaySystem::start(const Step&) {
  TORCH_CHECK(false, "internal: the replay takes its steps from the tape");
}

double ReplaySystem::attempt(const Step& walk) {
  const TapeStep& rec = tape_.steps[walk.tape_index];
  c10::AutoGradMode enable_grad(true);
  // The recorded step again, from leaves: its start state and, with a time graph,
  // its times, which then receive gradients too.
  Step step = rec.step;
  const at::Tensor z0 = rec.z0.detach().requires_grad_(true);
  std::vector<at::Tensor> originals, time_leaves;  // recorded times (graph to t), their leaves
  auto leaf = [&](at::Tensor& x) {
    if (!tape_.time_graph || !x.defined() || !x.requires_grad()) return;
    originals.push_back(x);
    x = x.detach().requires_grad_(true);
    time_leaves.push_back(x);
  };
  std::vector<at::Tensor> lin_thetas = rec.lin_thetas;
  leaf(step.t0);
  leaf(step.h);
  leaf(step.t1);
  for (at::Tensor& th : lin_thetas) leaf(th);
  if (step.h.defined() && step.h.requires_grad()) step.dt = step.h.to(z0.scalar_type());

  Stages st;
  st.clear(1);
  st.k[0].push_back(f_(stage_time(step, 0.0, t_options_), z0));
  st.factor.push_back(1.0);
  const std::vector<StagePart> parts{{z0, false, false}};
  loop_.run(step, t_options_, parts, st,
            [&](int, const at::Tensor& time, const std::vector<at::Tensor>& x) {
              return std::vector<at::Tensor>{f_(time, x[0])};
            });
  const std::vector<at::Tensor>& ks = st.k[0];
  const at::Tensor y1 = loop_.combine(parts[0], ks, loop_.b(), st.factor, step.dt);

  // Cotangents: dL/dy1 is a (later steps and the observation at the step's end);
  // observations inside the step get theirs through the interpolation.
  std::vector<at::Tensor> outputs{y1}, cotangents{a_};
  if (rec.step.row_errors) {
    // Per-sample steps: only the accepted rows moved (the others pass a through), and
    // each row's observations inside its step come from its own dense output.
    if (rec.step.accept_rows.defined()) outputs[0] = at::where(rows_view(rec.step.accept_rows, z0.dim()), y1, z0);
    if (!rec.step.sample_obs.empty()) {
      const int64_t B = z0.size(0);
      const at::Tensor f1 = loop_.tableau().fsal ? ks.back() : f_(end_time(step, t_options_), y1);
      std::vector<int64_t> rows, flat;
      std::vector<double> thetas, hs;
      for (const SampleObs& o : rec.step.sample_obs) {
        rows.push_back(o.row);
        thetas.push_back(o.theta);
        hs.push_back(rec.step.row_h[o.row]);
        flat.push_back(o.obs * B + o.row);
      }
      const at::Tensor where = host_index(flat, z0.device());
      outputs.push_back(interpolate_rows(loop_.tableau(), rows, thetas, hs, z0, y1, ks, f1));
      cotangents.push_back(grad_ys_.flatten(0, 1).index_select(0, where));
    }
  } else if (!rec.step.inner.empty()) {
    std::vector<at::Tensor> inside;
    for (int64_t j : rec.step.inner) inside.push_back(grad_ys_[j]);
    if (loop_.tableau().adaptive) {
      const at::Tensor f1 = loop_.tableau().fsal ? ks.back() : f_(end_time(step, t_options_), y1);
      outputs.push_back(interpolate(loop_.tableau(), rec.thetas, step.dtau, z0, y1, ks, f1));
      cotangents.push_back(at::stack(inside));
    } else {
      const at::Tensor f1 = tape_.cubic ? f_(end_time(step, t_options_), y1) : at::Tensor();
      for (size_t m = 0; m < lin_thetas.size(); ++m) {
        outputs.push_back(tape_.cubic ? interpolate_cubic(z0, y1, ks[0], f1, lin_thetas[m], step.dt)
                                      : interpolate_linear(z0, y1, lin_thetas[m]));
        cotangents.push_back(inside[m]);
      }
    }
  }
  std::vector<at::Tensor> inputs{z0};
  const std::vector<at::Tensor>& params = f_.params();
  inputs.insert(inputs.end(), params.begin(), params.end());
  inputs.insert(inputs.end(), time_leaves.begin(), time_leaves.end());
  std::vector<at::Tensor> grads = torch::autograd::grad(outputs, inputs, cotangents,
                                                        /*retain_graph=*/false,
                                                        /*create_graph=*/false,
                                                        /*allow_unused=*/true);
  a_next_ = grads[0].defined() ? grads[0] : at::zeros_like(a_);
  for (size_t p = 0; p < params.size(); ++p) {
    if (grads[p + 1].defined()) a_params_[p].add_(grads[p + 1]);
  }
  for (size_t m = 0; m < time_leaves.size(); ++m) {
    const at::Tensor& g = grads[1 + params.size() + m];
    if (!g.defined()) continue;
    time_tensors_.push_back(originals[m]);
    time_grads_.push_back(g);
  }
  return 0.0;
}

void ReplaySystem::commit(const Step&) { a_ = a_next_; }

void ReplaySystem::jump(const at::Tensor& grad_z) { a_ = a_ + grad_z; }

at::Tensor ReplaySystem::grad_t() const {
  if (time_tensors_.empty()) return at::zeros_like(tape_.t);
  // The step times' small graph to t is kept: a backward with retain_graph (gradcheck
  // calls two) replays the same tape again.
  std::vector<at::Tensor> g = torch::autograd::grad(time_tensors_, {tape_.t}, time_grads_,
                                                    /*retain_graph=*/true,
                                                    /*create_graph=*/false,
                                                    /*allow_unused=*/true);
  return g[0].defined() ? g[0] : at::zeros_like(tape_.t);
}

}  // namespace neuralode
