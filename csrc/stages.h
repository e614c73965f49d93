// The one Runge-Kutta stage loop. Every solve (forward, continuous adjoint,
// checkpoint replay) steps a state made of one or more parts through it:
//
//     x_p,i = x_p + sum_{j<i} a_ij w_pj k_pj,     k_i = eval(t + c_i h, x_i)
//     x_p,1 = x_p + sum_j b_j w_pj k_pj,          err_p = sum_j e_j w_pj k_pj
//
// with w_pj = dt for a plain part (k is a time derivative) and w_pj = factor_j
// for a pre-scaled part (k already holds dt, e.g. the adjoint's products with
// the cotangent dt * a; factor_j rescales a stage carried over from a step of
// another size). A negated part combines -k (the adjoint's da/dt = -a df/dz).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "error_norm.h"
#include "spec.h"
#include "step.h"
#include "tableau.h"

namespace neuralode {

// A step size (0-d or one value per row) viewed to broadcast over a state of
// `dim` dimensions: (rows, 1, ..., 1). Symbolic sizes, so torch.compile can trace it.
at::Tensor rows_view(const at::Tensor& h, int64_t dim);

// x (rows, ...) as (rows, elements per row), also when either is 0.
at::Tensor by_rows(const at::Tensor& x);

// Host values as a 1-D tensor (copied) with `options`, and host indices as a 1-D long
// tensor on `device`: what the per-sample loop hands to its tensor ops.
at::Tensor host_tensor(const std::vector<double>& values, const at::TensorOptions& options);
at::Tensor host_index(const std::vector<int64_t>& index, const at::Device& device);

struct StagePart {
  at::Tensor x;
  bool negated = false;
  bool prescaled = false;
};

// The stage derivatives of one step, per part: k[p][i]; factor[i] as above.
struct Stages {
  std::vector<std::vector<at::Tensor>> k;
  std::vector<double> factor;

  void clear(size_t parts) {
    k.assign(parts, {});
    factor.clear();
  }
};

class StageLoop {
 public:
  StageLoop(const Tableau& tab, bool differentiable);

  const Tableau& tableau() const { return tab_; }

  // Fills stages 1 .. s-1 (stage 0 must be in `st`). `eval(i, time, inputs)`
  // returns stage i's derivative of every part.
  template <typename Eval>
  void run(const Step& step, const at::TensorOptions& t_options,
           const std::vector<StagePart>& parts, Stages& st, Eval&& eval) const {
    std::vector<at::Tensor> inputs(parts.size());
    // Per-sample steps: every stage's time in one pass (row_stage_times).
    const at::Tensor times = step.row_errors ? row_stage_times(step) : at::Tensor();
    for (int i = static_cast<int>(st.factor.size()); i < tab_.stages; ++i) {
      for (size_t p = 0; p < parts.size(); ++p) {
        inputs[p] = combine(parts[p], st.k[p], a_[i], st.factor, step.dt);
      }
      std::vector<at::Tensor> k =
          eval(i, times.defined() ? times[i] : stage_time(step, tab_.c[i], t_options), inputs);
      for (size_t p = 0; p < parts.size(); ++p) st.k[p].push_back(std::move(k[p]));
      st.factor.push_back(1.0);
    }
  }

  // x_p + sum_j b_j w_pj k_pj and, for adaptive methods, its error as `plan`'s norm
  // needs it (error_norm.h); no error pieces for fixed-step methods.
  std::pair<at::Tensor, PartError> finish(const Step& step, const StagePart& part,
                                          const std::vector<at::Tensor>& k,
                                          const std::vector<double>& factor,
                                          const StepPlan& plan) const;

  // Per-sample steps: x_p + sum_j b_j w_pj k_pj and each row's RMS of
  // err / (atol + rtol max(|x|, |x1|)), err = sum_j e_j w_j k_j, in one fused pass
  // (rk_solution_error_rows; the ratios read to the host at once).
  std::pair<at::Tensor, std::vector<double>> finish_rows(const Step& step, const StagePart& part,
                                                         const std::vector<at::Tensor>& k,
                                                         const std::vector<double>& factor,
                                                         const StepPlan& plan) const;

  // x + sum_j c_j w_j k_j for the part's weights w (dt, or the factors).
  at::Tensor combine(const StagePart& part, const std::vector<at::Tensor>& k,
                     const std::vector<double>& c, const std::vector<double>& factor,
                     const at::Tensor& dt) const;

  // Per-sample steps (t0 and h of shape (rows, 1)): the stages' times t0 + c_i h as
  // (stages, rows, 1), the same sums stage_time forms one stage at a time.
  at::Tensor row_stage_times(const Step& step) const;

  const std::vector<double>& b() const { return b_; }
  // The weights b_j w_j and e_j w_j of a part's stages (w: the sign of a negated part and
  // the factors of a pre-scaled one): every weight, so that a kernel reads each k once.
  std::pair<std::vector<double>, std::vector<double>> part_weights(const StagePart& part,
                                                                   const std::vector<double>& factor) const;
  const std::vector<double>& e() const { return e_; }

 private:
  const Tableau& tab_;
  bool differentiable_;
  std::vector<std::vector<double>> a_;  // row i: a_i0 .. a_i,i-1
  std::vector<double> b_, e_;
  mutable at::Tensor nodes_;  // c as (stages, 1, 1) in the times' dtype and device
};

}  // namespace neuralode
