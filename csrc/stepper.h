// Pieces every Runge-Kutta loop shares: the stage combinations (bypassing
// autograd when nothing is differentiated), a tableau's coefficients as those
// calls take them, and step-size broadcasting.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "tableau.h"

namespace neuralode {

// A step size (0-d or per-sample (batch, 1)) viewed so that it broadcasts over a
// state of `dim` dimensions: (batch, 1, ..., 1).
at::Tensor rows_view(const at::Tensor& h, int64_t dim);

// Runs stage combinations, bypassing autograd when nothing is differentiated
// (the autograd kernel is Python: skipping it matters in the hot loop).
class Combiner {
 public:
  explicit Combiner(bool differentiable) : differentiable_(differentiable) {}

  // y0 + dt * sum_j c[j] * ks[j] over the j with c[j] != 0 (dt undefined: 1).
  at::Tensor operator()(const at::Tensor& y0, const std::vector<at::Tensor>& ks,
                        const std::vector<double>& c, const at::Tensor& dt) const;

  bool differentiable() const { return differentiable_; }

 private:
  bool differentiable_;
};

// A tableau's coefficients as the combination calls take them, built once per
// solve rather than in every step: row i of a, b and the error weights e, a and
// b also negated (the adjoint a = dL/dz combines -a.df/dz terms).
struct StageCoefficients {
  std::vector<std::vector<double>> a, minus_a;
  std::vector<double> b, minus_b, e, minus_e;

  explicit StageCoefficients(const Tableau& tab);
};

// t + c_i h (t itself when c_i = 0).
at::Tensor stage_time(const Tableau& tab, int i, const at::Tensor& t, const at::Tensor& h);

}  // namespace neuralode
