// The step-size controller of adaptive methods: the next step size from the error
// ratio of the last try (the I controller, Gustafsson's PI controller, or the I
// controller capped by Gustafsson's predictive rule). One per solve, or one per sample
// when each sample steps on its own.
#pragma once

#include <algorithm>
#include <cmath>

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

}  // namespace neuralode
