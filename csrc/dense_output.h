// Output inside a step: the dense output of an adaptive step (from its stages, without
// new evaluations of f) and the linear interpolation of a fixed one.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "tableau.h"

namespace neuralode {

// Rows y(t0 + thetas[m] h), m = 0 .. M-1, of one step from y0 to y1 with stages ks
// and f1 = f(t0 + h, y1): shape (M, *y0.shape). With midpoint weights (has_mid) the
// quartic through y0, y(1/2), y1 with slopes f0, f1; otherwise the cubic Hermite
// interpolant through y0, y1 with slopes f0, f1. One matrix product of the
// (M x terms) weights with the stacked [y0, y1, k_0 .. k_{s-1}, f1]: two ops per step
// however many observations fall in it, and autograd through them stays in C++.
at::Tensor interpolate(const Tableau& tab, const std::vector<double>& thetas, double h,
                       const at::Tensor& y0, const at::Tensor& y1,
                       const std::vector<at::Tensor>& ks, const at::Tensor& f1);

// The same interpolant for chosen rows of the state, each at its own theta and step
// size: output m is row rows[m] at thetas[m] with step hs[m] (a row may appear several
// times): per-sample steps (one batched product for all the step's observations) and
// events per sample. Shape (M, *y0.shape[1:]).
at::Tensor interpolate_rows(const Tableau& tab, const std::vector<int64_t>& rows,
                            const std::vector<double>& thetas, const std::vector<double>& hs,
                            const at::Tensor& y0, const at::Tensor& y1,
                            const std::vector<at::Tensor>& ks, const at::Tensor& f1);

// z0 + theta (z1 - z0): the fixed-step methods' output inside a step (torchdiffeq's
// fixed-grid interpolation); theta is 0-d or one value per row of z0.
at::Tensor interpolate_linear(const at::Tensor& z0, const at::Tensor& z1, const at::Tensor& theta);

// The cubic Hermite interpolant through (z0, f0) and (z1, f1) over a step dt, at theta
// (0-d or one value per row of z0): h00 z0 + h10 dt f0 + h01 z1 + h11 dt f1 with
// h00 = (1 + 2 theta)(1 - theta)^2, h10 = theta (1 - theta)^2, h01 = theta^2 (3 - 2 theta),
// h11 = theta^2 (theta - 1) (torchdiffeq's fixed-grid interp="cubic").
at::Tensor interpolate_cubic(const at::Tensor& z0, const at::Tensor& z1, const at::Tensor& f0,
                             const at::Tensor& f1, const at::Tensor& theta, const at::Tensor& dt);

}  // namespace neuralode
