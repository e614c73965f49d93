// The step-size controller of adaptive methods: the next step size from the error
// ratio of the last try (the I controller, Gustafsson's PI controller, or the I
// controller capped by Gustafsson's predictive rule). One per solve, or one per sample
// when each sample steps on its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "spec.h"

namespace neuralode {

// The next step size from the RMS error ratio of the last try (torchdiffeq's rule
// for the I controller: an accepted step never shrinks the next one).
class Controller {
 public:
  Controller(const StepPlan& p, int order) : p_(p), order_(order) {}

  double next(double h_abs, double ratio, bool accepted) {
    if (!std::isfinite(ratio)) return h_abs * p_.dfactor;
    if (ratio == 0.0) return h_abs * p_.ifactor;
    const bool pi = p_.controller == StepPlan::Controller::kPI;
    double factor = p_.safety * std::pow(ratio, -(pi ? p_.beta1 : 1.0) / order_);
    if (pi && accepted) factor *= std::pow(previous_, p_.beta2 / order_);
    factor = std::min(p_.ifactor, std::max(factor, accepted ? 1.0 : p_.dfactor));
    if (accepted) previous_ = std::max(ratio, 1e-4);
    double h = h_abs * factor;
    if (p_.controller == StepPlan::Controller::kPredictive && accepted) {
      // Gustafsson's predictive rule (Hairer & Wanner II, IV.8, as in RADAU5): where the
      // error grows from one accepted step to the next, extrapolate that growth,
      //   h_new = safety h (h / h_acc) (r_acc / r^2)^(1/p),
      // so that the step the I rule keeps (it never shrinks after an accept) is not
      // rejected next. A backward solve that leaves an attracting manifold (the adjoint's
      // re-solved state on stiff rows) has such growth at every step.
      if (h_accepted_ > 0.0) {
        const double predicted =
            p_.safety * h_abs * (h_abs / h_accepted_) * std::pow(ratio_accepted_ / (ratio * ratio), 1.0 / order_);
        h = std::min(h, std::max(predicted, h_abs * p_.dfactor));
      }
      h_accepted_ = h_abs;
      ratio_accepted_ = std::max(ratio, 1e-2);
    }
    return h;
  }

 private:
  const StepPlan& p_;
  int order_;
  double previous_ = 1.0;
  // The predictive rule's memory: the last accepted step's size and error ratio.
  double h_accepted_ = 0.0, ratio_accepted_ = 1.0;
};

// ---------------------------------------------------------------- step policy shared by
// the adaptive planners (one clock for the batch, or one per sample)

// Hairer's initial step (Hairer, Norsett & Wanner, "Solving ODEs I", II.4), as torchdiffeq
// and scipy choose it. First the trial step from d0 = ||z0||, d1 = ||f(t0, z0)|| (scaled
// RMS norms):
inline double hairer_trial_step(double d0, double d1) { return (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1; }
// then, with d2 = ||f(t0 + h0, z0 + h0 f0) - f0|| / h0, the first step for a method of
// order p: min(100 h0, (0.01 / max(d1, d2))^(1/p)). torchdiffeq hands Hairer's formula,
// whose exponent is 1/(q + 1) with q = p - 1 the error estimate's order; so do we, for
// the same first step.
inline double hairer_first_step(double h0, double d1, double d2, int order) {
  const double dmax = std::max(d1, d2);
  const double h1 = dmax <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / dmax, 1.0 / order);
  return std::min(100 * h0, h1);
}

// The step to try from tau towards `boundary` (the next stop, knot or last time): the
// controller's size clamped to [min_step, max_step]; it ends on the boundary when it
// reaches it or would leave less than 1% of a step before it (stretching the step by at
// most 1% beats a sliver step; the error estimate is of the step actually taken). A step
// of at most min_step is accepted whatever its error (torchdiffeq's rule).
struct StepTry {
  double size;  // |step|
  bool lands;   // it ends on the boundary
  bool at_min;  // accepted whatever its error
};

inline StepTry step_try(const StepPlan& p, double h_abs, double tau, double boundary) {
  const double h = std::min(std::max(h_abs, p.min_step), p.max_step);
  const bool lands = std::abs(boundary - tau) <= 1.01 * h;
  const double size = lands ? std::abs(boundary - tau) : h;
  return {size, lands, h <= p.min_step || size <= p.min_step};
}

// Whether a step of `size` from tau in `direction` makes no progress: it rounds to tau,
// or is below a few units of the clock's resolution relative to the time or (near t = 0,
// where subnormal steps never round to 0) to the solve's span.
inline bool below_resolution(double tau, double direction, double size, double span) {
  const double resolution = 4 * std::numeric_limits<double>::epsilon() * std::max(std::abs(tau), span);
  return tau + direction * size == tau || size <= resolution;
}

}  // namespace neuralode
