// The step-size controller of adaptive methods: the next step size from the error
// ratio of the last try (the I controller, or Gustafsson's PI controller). One per
// solve, or one per sample when each sample steps on its own.
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
    double factor = p_.safety * std::pow(ratio, -(p_.pi ? p_.beta1 : 1.0) / order_);
    if (p_.pi && accepted) factor *= std::pow(previous_, p_.beta2 / order_);
    factor = std::min(p_.ifactor, std::max(factor, accepted ? 1.0 : p_.dfactor));
    if (accepted) previous_ = std::max(ratio, 1e-4);
    return h_abs * factor;
  }

 private:
  const StepPlan& p_;
  int order_;
  double previous_ = 1.0;
};

}  // namespace neuralode
