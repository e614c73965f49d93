// The one interface through which the integration loops call the user's
// dynamics f(t, z): plain evaluation, and evaluation together with the
// vector-Jacobian products the adjoint needs.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

namespace neuralode {

// f(t, z) and its vector-Jacobian products with a cotangent w:
// w.df/dz, w.df/dt and w.df/dtheta for every parameter theta. An undefined
// tensor stands for zero (f does not depend on that input).
struct VectorJacobianProducts {
  at::Tensor f;
  at::Tensor wz;
  at::Tensor wt;
  std::vector<at::Tensor> wp;
  // With `retain` (vjp): f's output, whose graph is kept for params_vjp.
  at::Tensor out;
};

// Counts and times of one solve.
struct SolveStats {
  int64_t nfe = 0, accepted = 0, rejected = 0;
  double f_seconds = 0.0, total_seconds = 0.0;
  // Per-sample steps: each sample's accepted steps (empty otherwise). `accepted` is then
  // the batched loop's steps in which some sample moved: the cost in evaluations of f.
  std::vector<int64_t> row_accepted;
};

class Dynamics {
 public:
  // `fn(t, z)` returns dz/dt with the shape, dtype and device of z. `params`
  // are the tensors dL/dtheta is taken for (those that require grad).
  using Fn = std::function<at::Tensor(const at::Tensor& t, const at::Tensor& z)>;

  Dynamics(Fn fn, std::vector<at::Tensor> params) : fn_(std::move(fn)), params_(std::move(params)) {}

  // f(t, z), checked against the state's shape, dtype and device; counted and timed.
  at::Tensor operator()(const at::Tensor& t, const at::Tensor& z);

  // f(t, z) and the products with w through one backward pass of torch
  // autograd (the graph of f is freed right after). With need_t false, w.df/dt
  // is not computed; with `with_params` false, neither is w.df/dtheta (r.wp stays
  // undefined: params_vjp takes it later).
  // With `retain` the graph of f is kept (r.out) for params_vjp with another cotangent.
  VectorJacobianProducts vjp(const at::Tensor& t, const at::Tensor& z, const at::Tensor& w,
                             bool need_t, bool retain = false, bool with_params = true);
  // sum_i w_i.df/dtheta through the graphs kept by vjp(..., retain=true) for outs[i],
  // in one backward pass (the graphs are freed after this call).
  std::vector<at::Tensor> params_vjp(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& ws);

  const std::vector<at::Tensor>& params() const { return params_; }

  // With `create_graph` the products are themselves differentiable (w.r.t. z, w and
  // the parameters): the backward solve is recorded for second derivatives.
  void set_create_graph(bool on) { create_graph_ = on; }
  // With `check`, the first evaluation of f records its graph, which is searched for
  // tensors that require grad but are neither z, t nor a parameter: their gradients
  // would be lost (adjoint and checkpoint), so that is an error naming the fix.
  void set_check_captured(bool on) { check_captured_ = on; }
  // The search itself (once, when set): `out`'s graph, stopping at `known` tensors and
  // the parameters.
  void check_captured(const at::Tensor& out, const std::vector<at::Tensor>& known);
  // Number of evaluations of f so far (a VJP counts as one).
  int64_t nfe() const { return nfe_; }
  // Wall-clock seconds spent inside f and its VJPs so far (on CUDA: launching
  // their kernels, which run asynchronously).
  double f_seconds() const { return f_seconds_; }

 private:
  Fn fn_;
  std::vector<at::Tensor> params_;
  bool create_graph_ = false, check_captured_ = false;
  int64_t nfe_ = 0;
  double f_seconds_ = 0.0;
};

// Measures one solve: construct it when the solve starts, call finish() at its end.
class SolveMeter {
 public:
  explicit SolveMeter(const Dynamics& f)
      : f_(f), nfe0_(f.nfe()), f_seconds0_(f.f_seconds()), start_(std::chrono::steady_clock::now()) {}

  SolveStats finish(int64_t accepted, int64_t rejected = 0) const {
    SolveStats s;
    s.nfe = f_.nfe() - nfe0_;
    s.accepted = accepted;
    s.rejected = rejected;
    s.f_seconds = f_.f_seconds() - f_seconds0_;
    s.total_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return s;
  }

 private:
  const Dynamics& f_;
  int64_t nfe0_;
  double f_seconds0_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace neuralode
