// Observers: what happens at observation times. The forward's outputs (exact at a
// step's end, dense or linear inside it) and its checkpoint tape; the adjoint's
// jumps a += dL/dz(t_i) with the time gradients; the replay's jumps.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "dynamics.h"
#include "events.h"
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
  // After the system moved to the end of an accepted step (per-sample steps: the rows
  // that landed on their observations).
  virtual void after_commit(const Step&, System&) {}
  // Whether the solve ends here, before its last observation (an event was found).
  virtual bool finished() const { return false; }
};

// The forward's outputs y(t_i), in order; with a tape, every accepted step too.
// With an event, the outputs are y0 and y at the event, and the solve ends there: one
// event (the second output, served like an observation inside its step: recorded on
// the tape, differentiable), or one per sample (each row at its own event; not
// differentiated: the gradients re-solve to those times).
class OutputObserver : public Observer {
 public:
  // `t`: the times the planner placed steps from; `clock`: the adaptive planner's;
  // `cubic`: fixed steps interpolate cubic Hermite (else linearly).
  // `per_sample`: each sample steps on its own (its observations are served in the
  // order its steps reach them, and put in place at the end).
  OutputObserver(const at::Tensor& t, const Clock* clock, Tape* tape, bool cubic,
                 const EventSpec* event = nullptr, bool per_sample = false)
      : t_(t), clock_(clock), tape_(tape), cubic_(cubic), event_(event), per_sample_(per_sample) {}

  void begin(System& system) override;
  void on_step(const Step& step, System& system) override;
  void on_stop(int64_t obs, System& system) override;
  bool finished() const override { return search_ && search_->done(); }
  // (T, *y0.shape)
  at::Tensor outputs() const;
  // With an event: its time (0-d, or (batch,) per sample) in t's dtype.
  at::Tensor event_time() const;

 private:
  // Where the event lies in an accepted step whose end changed g's sign, and its outputs.
  // Per-sample steps: each row's observations inside its step, by its dense output.
  void on_sample_step(const Step& step, ForwardSystem& fs);
  // Returns whether the one event (not per sample) was found inside it.
  bool locate_events(const Step& step, ForwardSystem& fs, TapeStep& rec);
  // Rows of the state at one theta each inside `step` (no autograd).
  at::Tensor state_at(const Step& step, ForwardSystem& fs, const at::Tensor& f1,
                      const std::vector<double>& thetas, bool per_row) const;
  // The time f receives at host time tau for each of `n` rows (0-d when n is 0).
  at::Tensor time_tensor(const std::vector<double>& taus, const at::Tensor& like) const;

  const at::Tensor& t_;
  const Clock* clock_;
  Tape* tape_;
  bool cubic_;
  const EventSpec* event_;
  std::unique_ptr<EventSearch> search_;
  std::vector<double> event_tau_;  // per row, host
  at::Tensor event_rows_;          // per sample: the state at each row's event
  bool per_sample_;
  std::vector<at::Tensor> chunks_;
  std::vector<int64_t> sample_index_;  // per-sample steps: obs * batch + row of each served row
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

// The per-sample adjoint's observations: each row lands on its own observations walking
// backwards; there that row restarts from the forward's y(t_i), gets dL/dz(t_i) added to
// its a and (i >= 1) its direct time term dL/dt_i = dL/dz(t_i) . f(t_i, z_i), taken for
// every (i, row) at once at the start (T - 1 evaluations of f on the batch).
class SampleAdjointObserver : public Observer {
 public:
  // `t`: (T, batch, 1); ys and grad_ys: (T, batch, ...).
  SampleAdjointObserver(Dynamics& f, const at::Tensor& t, const at::Tensor& ys, const at::Tensor& grad_ys,
                        bool need_t);

  void begin(System& system) override;
  void after_commit(const Step& step, System& system) override;
  // dL/dt (T, batch, 1) with the running time adjoint (batch, 1) as dL/dt_0.
  at::Tensor grad_t(const at::Tensor& a_t) const;

 private:
  const at::Tensor &ys_, &grad_ys_;
  bool need_t_;
  at::Tensor direct_;  // (T, batch, 1): dL/dt_i per row; row 0 unused
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
