// Systems: what a solve steps. Each runs the one stage loop (stages.h) on its
// parts and keeps what a step leaves behind:
//   ForwardSystem  z with dz/dt = f(t, z) (backprop: every op recorded by autograd);
//   AdjointSystem  [z, a] of the continuous adjoint walked backwards, dL/dtheta and
//                  dL/dt accumulated outside the state;
//   ReplaySystem   the discrete adjoint: each recorded step replayed with autograd,
//                  the cotangent a pulled back through it.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "dynamics.h"
#include "spec.h"
#include "stages.h"
#include "tape.h"

namespace neuralode {

class System {
 public:
  virtual ~System() = default;
  // The state z and f(t, z) at the start of `step`: stage 0, evaluated once and
  // kept while the step's start holds (FSAL, rejected steps).
  virtual std::pair<at::Tensor, at::Tensor> start(const Step& step) = 0;
  // The stages and end of `step`; returns its RMS error ratio (0 without an estimate).
  virtual double attempt(const Step& step) = 0;
  // Makes the attempted step's end the state.
  virtual void commit(const Step& step) = 0;
  // The state as step callbacks see it (at the current step's start).
  virtual std::vector<at::Tensor> callback_state() { return {}; }
  // After an attempt with step.row_errors: each row's error ratio.
  const std::vector<double>& row_ratios() const { return row_ratios_; }

 protected:
  std::vector<double> row_ratios_;
};

class ForwardSystem : public System {
 public:
  ForwardSystem(Dynamics& f, const StepPlan& plan, const at::Tensor& y0,
                const at::TensorOptions& t_options, bool differentiable);

  std::pair<at::Tensor, at::Tensor> start(const Step& step) override;
  double attempt(const Step& step) override;
  void commit(const Step& step) override;

  const at::Tensor& z() const { return z_; }
  const at::Tensor& z1() const { return z1_; }
  std::vector<at::Tensor> callback_state() override { return {z_.detach()}; }
  const std::vector<at::Tensor>& stages() const { return st_.k[0]; }
  // f at the end of the attempted step (the last stage of FSAL methods).
  at::Tensor f_end(const Step& step);
  const Tableau& tableau() const { return loop_.tableau(); }

 private:
  Dynamics& f_;
  const StepPlan& plan_;
  StageLoop loop_;
  at::TensorOptions t_options_;
  at::Tensor z_, z1_, f1_;
  Stages st_;
  at::Tensor k0_;  // f at (k0_tau_, z_), or undefined
  double k0_tau_ = 0.0;
};

// Per-stage products of the adjoint: a.df/dt and a.df/dtheta with the cotangent dt * a_i.
struct AdjointStage {
  at::Tensor wt;
  std::vector<at::Tensor> wp;
  // Per-sample steps: f's output with its graph kept and the cotangent dt * a; the
  // parameter products (wp empty) are taken at commit, for the accepted rows only.
  at::Tensor out, cotangent;
};

class AdjointSystem : public System {
 public:
  // Starts at z = ys[T-1], a = 0 (the observer adds dL/dz(t_{T-1})). With
  // `differentiable` the solve is recorded by autograd (f's products included, see
  // Dynamics::set_create_graph): its results are differentiable again.
  AdjointSystem(Dynamics& f, const StepPlan& plan, const at::Tensor& z, const at::Tensor& t_row,
                const at::TensorOptions& t_options, bool seminorm, bool need_t, bool differentiable);

  std::pair<at::Tensor, at::Tensor> start(const Step& step) override;
  double attempt(const Step& step) override;
  void commit(const Step& step) override;

  // The jump at an observation: restart from the stored forward state, add dL/dz.
  void jump(const at::Tensor& z, const at::Tensor& grad_z);
  // The same for some rows (per-sample steps): rows `index` restart from z_rows, get
  // grad_rows added to a and, with time gradients, -direct_rows added to a_t.
  void jump_rows(const at::Tensor& index, const at::Tensor& z_rows, const at::Tensor& grad_rows,
                 const at::Tensor& direct_rows);
  // dL/dt_0 += x (the observer's direct time terms).
  void add_time(const at::Tensor& x);
  // [z, a, a_t, a_theta...]: the augmented state of the continuous adjoint.
  std::vector<at::Tensor> callback_state() override;
  at::Tensor& a() { return a_; }
  at::Tensor& a_t() { return a_t_; }
  std::vector<at::Tensor>& a_params() { return a_params_; }

 private:
  // acc += alpha x: in place, or (recorded) out of place.
  void accumulate(at::Tensor& acc, const at::Tensor& x, double alpha) const;
  // Stage 0 at `step`'s start, with the cotangent dt * a of a step of `dtau`.
  void first_stage(const Step& step);

  Dynamics& f_;
  const StepPlan& plan_;
  StageLoop loop_;
  bool differentiable_;
  at::TensorOptions t_options_;
  bool seminorm_, need_t_;
  at::Tensor z_, a_, a_t_;
  std::vector<at::Tensor> a_params_;
  // The attempted step: stages of [z, a], their side products, the new values.
  Stages st_;
  std::vector<AdjointStage> side_;
  at::Tensor z1_, a1_;
  std::vector<at::Tensor> d_params_;
  // Stage 0 kept for the next attempt: host time, dtau of its cotangent.
  bool k0_valid_ = false;
  double k0_tau_ = 0.0, k0_dtau_ = 1.0;
  at::Tensor k0_f_, k0_wz_;
  AdjointStage k0_side_;
};

class ReplaySystem : public System {
 public:
  ReplaySystem(Dynamics& f, const Tape& tape, const at::Tensor& grad_ys,
               const at::TensorOptions& t_options);

  std::pair<at::Tensor, at::Tensor> start(const Step& step) override;
  double attempt(const Step& step) override;
  void commit(const Step& step) override;

  // The jump at an observation: add dL/dz to the cotangent.
  void jump(const at::Tensor& grad_z);
  at::Tensor& a() { return a_; }
  std::vector<at::Tensor>& a_params() { return a_params_; }
  // dL/dt through the recorded step times (undefined without a time graph).
  at::Tensor grad_t() const;

 private:
  Dynamics& f_;
  const Tape& tape_;
  const at::Tensor& grad_ys_;
  StageLoop loop_;
  at::TensorOptions t_options_;
  at::Tensor a_, a_next_;
  std::vector<at::Tensor> a_params_;
  // The recorded time tensors and the gradients that reached them.
  std::vector<at::Tensor> time_tensors_, time_grads_;
};

}  // namespace neuralode
