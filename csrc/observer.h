// Observers: what happens at observation times. The forward's outputs (exact at a
// step's end, dense or linear inside it) and its checkpoint tape; the adjoint's
// jumps a += dL/dz(t_i) with the time gradients; the replay's jumps.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "dynamics.h"
#include "finite.h"
#include "planner.h"
#include "step.h"
#include "system.h"
#include "tape.h"

namespace neuralode {

class Observer {
 public:
  virtual ~Observer() = default;
  // Before the first step.
  virtual void begin(System&) {}
  // An accepted step, before the system moves to its end (inner observations).
  virtual void on_step(const Step&, System&) {}
  // After the system moved to the end of a step that ends on observation `obs`.
  virtual void on_stop(int64_t, System&) {}
};

// The forward's outputs y(t_i), in order; with a tape, every accepted step too.
class OutputObserver : public Observer {
 public:
  // `t`: the times the planner placed steps from; `clock`: the adaptive planner's;
  // `cubic`: fixed steps interpolate cubic Hermite (else linearly).
  OutputObserver(const at::Tensor& t, const Clock* clock, Tape* tape, bool cubic)
      : t_(t), clock_(clock), tape_(tape), cubic_(cubic) {}

  void begin(System& system) override;
  void on_step(const Step& step, System& system) override;
  void on_stop(int64_t obs, System& system) override;
  // (T, *y0.shape)
  at::Tensor outputs() const;

 private:
  const at::Tensor& t_;
  const Clock* clock_;
  Tape* tape_;
  bool cubic_;
  std::vector<at::Tensor> chunks_;
};

// The continuous adjoint's observations: at t_i, z restarts from the forward's
// y(t_i), a += dL/dz(t_i), and (i >= 1) dL/dt_i = dL/dz(t_i) . f(t_i, z_i), by which
// the running time adjoint drops (Chen et al. 2018, Algorithm 1).
class AdjointObserver : public Observer {
 public:
  AdjointObserver(Dynamics& f, const at::Tensor& t, const at::Tensor& ys, const at::Tensor& grad_ys,
                  bool need_t);

  void begin(System& system) override { on_stop(t_.size(0) - 1, system); }
  void on_stop(int64_t obs, System& system) override;
  // dL/dt (T, ...) with the running time adjoint as dL/dt_0.
  at::Tensor grad_t(const at::Tensor& a_t);
  // a after each jump, checked for NaN/Inf at the end (one host read).
  const FiniteWatch& watch() const { return watch_; }

 private:
  Dynamics& f_;
  const at::Tensor &t_, &ys_, &grad_ys_;
  bool need_t_;
  std::vector<at::Tensor> grad_t_;
  FiniteWatch watch_;
};

// The replay's observations: a += dL/dz(t_i) where a recorded step ended on t_i.
class ReplayObserver : public Observer {
 public:
  ReplayObserver(const at::Tensor& grad_ys, int64_t last_obs) : grad_ys_(grad_ys), last_obs_(last_obs) {}

  void begin(System& system) override {
    if (last_obs_ >= 0) on_stop(last_obs_, system);
  }
  void on_stop(int64_t obs, System& system) override;
  const FiniteWatch& watch() const { return watch_; }

 private:
  const at::Tensor& grad_ys_;
  int64_t last_obs_;
  FiniteWatch watch_;
};

}  // namespace neuralode
