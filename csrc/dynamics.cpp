#include "dynamics.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>

namespace neuralode {
namespace {

// Adds the wall-clock time of its scope to a counter.
class ScopedTimer {
 public:
  explicit ScopedTimer(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~ScopedTimer() {
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double& total_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

at::Tensor Dynamics::operator()(const at::Tensor& t, const at::Tensor& z) {
  at::Tensor out;
  {
    ScopedTimer timer(f_seconds_);
    out = fn_(t, z);
  }
  ++nfe_;
  TORCH_CHECK_VALUE(out.defined(), "func returned an undefined tensor; it must return dz/dt");
  TORCH_CHECK_VALUE(out.sizes() == z.sizes(), "func returned a tensor of shape ", out.sizes(),
                    " but the state has shape ", z.sizes(),
                    "; func(t, z) must return dz/dt with the shape of y0");
  TORCH_CHECK_VALUE(out.scalar_type() == z.scalar_type(), "func returned ", out.scalar_type(),
                    " but the state is ", z.scalar_type(),
                    "; func(t, z) must return dz/dt in the dtype of y0");
  TORCH_CHECK_VALUE(out.device() == z.device(), "func returned a tensor on ", out.device(),
                    " but the state is on ", z.device(),
                    "; func(t, z) must return dz/dt on the device of y0");
  return out;
}

VectorJacobianProducts Dynamics::vjp(const at::Tensor& t, const at::Tensor& z, const at::Tensor& w,
                                     bool need_t) {
  // The loops run under no_grad (adjoint) but the products need a graph of f.
  c10::AutoGradMode enable_grad(true);
  at::Tensor z_leaf = z.detach().requires_grad_(true);
  at::Tensor t_leaf = need_t ? t.detach().requires_grad_(true) : t.detach();
  at::Tensor out = (*this)(t_leaf, z_leaf);

  VectorJacobianProducts r;
  r.wp.resize(params_.size());
  if (!out.requires_grad()) {
    // f depends on neither z, t nor the parameters: every product is zero.
    r.f = out;
    return r;
  }
  std::vector<at::Tensor> inputs;
  inputs.reserve(2 + params_.size());
  inputs.push_back(z_leaf);
  if (need_t) inputs.push_back(t_leaf);
  inputs.insert(inputs.end(), params_.begin(), params_.end());
  ScopedTimer timer(f_seconds_);
  std::vector<at::Tensor> grads =
      torch::autograd::grad({out}, inputs, {w}, /*retain_graph=*/false, /*create_graph=*/false,
                            /*allow_unused=*/true);
  size_t pos = 0;
  r.wz = grads[pos++];
  if (need_t) r.wt = grads[pos++];
  for (size_t p = 0; p < params_.size(); ++p) r.wp[p] = grads[pos++];
  r.f = out.detach();
  return r;
}

}  // namespace neuralode
