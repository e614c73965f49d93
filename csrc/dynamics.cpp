#include "dynamics.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>

#include <type_traits>
#include <algorithm>
#include <unordered_set>

#include <chrono>
#include <optional>

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

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// f and its products w.df/dz, w.df/dt, w.df/dtheta as one differentiable op, for the
// recorded backward solve (second derivatives). The products are partial derivatives
// at the given z and t: inside, f runs on leaves, so autograd cannot reach z's own
// history (which depends on theta through the forward solve); outside, this node
// connects the products to z, t, w and theta, and its backward differentiates the
// products again (f's second derivatives).
class PartialProducts : public torch::autograd::Function<PartialProducts> {
 public:
  static variable_list forward(AutogradContext* ctx, Dynamics* f, bool need_t, const at::Tensor& t,
                               const at::Tensor& z, const at::Tensor& w, at::TensorList params) {
    c10::AutoGradMode enable_grad(true);
    at::Tensor t_leaf = t.detach().requires_grad_(need_t && t.is_floating_point());
    at::Tensor z_leaf = z.detach().requires_grad_(true);
    at::Tensor w_leaf = w.detach().requires_grad_(true);
    at::Tensor out = (*f)(t_leaf, z_leaf);
    std::vector<at::Tensor> inputs{z_leaf, t_leaf};
    inputs.insert(inputs.end(), params.begin(), params.end());
    std::vector<at::Tensor> grads(inputs.size());
    if (out.requires_grad()) {
      std::vector<at::Tensor> wanted;
      for (const at::Tensor& x : inputs) {
        if (x.requires_grad()) wanted.push_back(x);
      }
      std::vector<at::Tensor> found = torch::autograd::grad({out}, wanted, {w_leaf}, /*retain_graph=*/true,
                                                            /*create_graph=*/true, /*allow_unused=*/true);
      for (size_t i = 0, k = 0; i < inputs.size(); ++i) {
        if (inputs[i].requires_grad()) grads[i] = found[k++];
      }
    }
    // [f, w.df/dz, w.df/dt, w.df/dtheta...], zeros where f does not depend on an input.
    std::vector<at::Tensor> inner{out};
    for (size_t i = 0; i < inputs.size(); ++i) {
      inner.push_back(grads[i].defined() ? grads[i] : at::zeros_like(inputs[i]));
    }
    ctx->saved_data["inner"] = inner;
    ctx->saved_data["leaves"] = std::vector<at::Tensor>{t_leaf, z_leaf, w_leaf};
    ctx->saved_data["params"] = params.vec();
    variable_list result;
    for (const at::Tensor& x : inner) result.push_back(x.detach());
    return result;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const std::vector<at::Tensor> inner = ctx->saved_data["inner"].toTensorVector();
    const std::vector<at::Tensor> leaves = ctx->saved_data["leaves"].toTensorVector();
    const std::vector<at::Tensor> params = ctx->saved_data["params"].toTensorVector();
    std::vector<at::Tensor> outs, cots;
    for (size_t i = 0; i < inner.size(); ++i) {
      if (grad_outputs[i].defined() && inner[i].requires_grad()) {
        outs.push_back(inner[i]);
        cots.push_back(grad_outputs[i]);
      }
    }
    // d/d(t, z, w, theta) of the products, themselves differentiable when asked.
    std::vector<at::Tensor> inputs{leaves[0], leaves[1], leaves[2]};
    inputs.insert(inputs.end(), params.begin(), params.end());
    std::vector<at::Tensor> wanted;
    for (const at::Tensor& x : inputs) {
      if (x.requires_grad()) wanted.push_back(x);
    }
    std::vector<at::Tensor> found;
    if (!outs.empty() && !wanted.empty()) {
      found = torch::autograd::grad(outs, wanted, cots, /*retain_graph=*/true,
                                    /*create_graph=*/c10::GradMode::is_enabled(), /*allow_unused=*/true);
    }
    variable_list grads{at::Tensor(), at::Tensor()};  // f, need_t
    for (size_t i = 0, k = 0; i < inputs.size(); ++i) {
      grads.push_back(inputs[i].requires_grad() && !found.empty() ? found[k++] : at::Tensor());
    }
    return grads;
  }
};

}  // namespace

at::Tensor Dynamics::operator()(const at::Tensor& t, const at::Tensor& z) {
  at::Tensor out;
  // The first call of a solve that checks for captured tensors records f's graph.
  std::optional<c10::AutoGradMode> record;
  if (check_captured_) record.emplace(true);
  // Inference tensors keep no version counter (and autograd never sees them).
  auto version = [](const at::Tensor& x) { return x.is_inference() ? 0 : x._version(); };
  const int64_t z_version = version(z), t_version = version(t);
  // f sees times in the state's dtype (torchdiffeq's rule: the user's layers see one
  // dtype) while the clock keeps its own, more precise one; the cast is differentiable.
  const at::Tensor t_f = t.scalar_type() == z.scalar_type() ? t : t.to(z.scalar_type());
  {
    ScopedTimer timer(f_seconds_);
    out = fn_(t_f, z);
  }
  ++nfe_;
  TORCH_CHECK_VALUE(version(z) == z_version && version(t) == t_version,
                    "func modified its argument ", version(z) != z_version ? "y" : "t",
                    " in place (e.g. y += ... or y.mul_(...)); the solver's states and outputs "
                    "share that memory: return a new tensor instead");
  if (record) {
    check_captured(out, {z, t, t_f});
    out = out.detach();
  }
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
                                     bool need_t, bool retain, bool with_params) {
  TORCH_CHECK(!(retain && create_graph_), "internal: a kept graph is not recorded again");
  if (create_graph_) {
    // Recorded: one differentiable op (second derivatives through the adjoint).
    variable_list o = PartialProducts::apply(this, need_t, t, z, w, at::TensorList(params_));
    VectorJacobianProducts r;
    r.f = o[0];
    r.wz = o[1];
    if (need_t) r.wt = o[2];
    r.wp.assign(o.begin() + 3, o.end());
    return r;
  }
  // The loops run under no_grad (adjoint) but the products need a graph of f.
  c10::AutoGradMode enable_grad(true);
  at::Tensor z_in = z.detach().requires_grad_(true);
  at::Tensor t_in = need_t ? t.detach().requires_grad_(true) : t.detach();
  at::Tensor out = (*this)(t_in, z_in);

  VectorJacobianProducts r;
  r.wp.resize(params_.size());
  if (!out.requires_grad()) {
    // f depends on neither z, t nor the parameters: every product is zero.
    r.f = out;
    return r;
  }
  std::vector<at::Tensor> inputs;
  inputs.reserve(2 + params_.size());
  inputs.push_back(z_in);
  if (need_t) inputs.push_back(t_in);
  if (with_params) inputs.insert(inputs.end(), params_.begin(), params_.end());
  ScopedTimer timer(f_seconds_);
  std::vector<at::Tensor> grads =
      torch::autograd::grad({out}, inputs, {w}, /*retain_graph=*/retain,
                            /*create_graph=*/false, /*allow_unused=*/true);
  size_t pos = 0;
  r.wz = grads[pos++];
  if (need_t) r.wt = grads[pos++];
  if (with_params) {
    for (size_t p = 0; p < params_.size(); ++p) r.wp[p] = grads[pos++];
  }
  r.f = out.detach();
  if (retain) r.out = out;
  return r;
}

std::vector<at::Tensor> Dynamics::params_vjp(const std::vector<at::Tensor>& outs,
                                             const std::vector<at::Tensor>& ws) {
  std::vector<at::Tensor> wp(params_.size());
  std::vector<at::Tensor> kept, cotangents;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i].defined() && outs[i].requires_grad()) {
      kept.push_back(outs[i]);
      cotangents.push_back(ws[i]);
    }
  }
  if (params_.empty() || kept.empty()) return wp;
  c10::AutoGradMode enable_grad(true);
  ScopedTimer timer(f_seconds_);
  std::vector<at::Tensor> grads = torch::autograd::grad(kept, params_, cotangents, /*retain_graph=*/false,
                                                        /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t p = 0; p < params_.size(); ++p) wp[p] = grads[p];
  return wp;
}

void Dynamics::check_captured(const at::Tensor& out, const std::vector<at::Tensor>& known) {
  using torch::autograd::Node;
  if (!check_captured_) return;
  check_captured_ = false;  // once per solve: the graph of f does not change
  if (!out.requires_grad()) return;
  // Where the search stops: the graph nodes of z, t and the parameters (a leaf's is
  // its AccumulateGrad node, an intermediate's its grad_fn).
  std::unordered_set<const Node*> stops;
  std::unordered_set<const at::TensorImpl*> leaves;
  auto add = [&](const at::Tensor& x) {
    if (!x.defined() || !x.requires_grad()) return;
    if (x.grad_fn()) stops.insert(x.grad_fn().get());
    leaves.insert(x.unsafeGetTensorImpl());
  };
  for (const at::Tensor& x : known) add(x);
  for (const at::Tensor& p : params_) add(p);
  // shared_ptr or intrusive_ptr, depending on the torch version.
  using NodePtr = std::decay_t<decltype(out.grad_fn())>;
  std::vector<NodePtr> todo{out.grad_fn()};
  std::unordered_set<const Node*> seen;
  while (!todo.empty()) {
    NodePtr node = std::move(todo.back());
    todo.pop_back();
    if (!node || !seen.insert(node.get()).second || stops.count(node.get())) continue;
    if (auto* acc = dynamic_cast<torch::autograd::AccumulateGrad*>(node.get())) {
      const at::Tensor& v = acc->variable;
      // A leaf that f made of its own arguments (z.requires_grad_() on a view of the
      // state, as FFJORD's trace estimate does) shares their memory: not a captured tensor.
      const bool own = std::any_of(known.begin(), known.end(), [&](const at::Tensor& x) {
        return x.defined() && v.is_alias_of(x);
      });
      TORCH_CHECK_VALUE(own || leaves.count(v.unsafeGetTensorImpl()) > 0,
                        "func uses a tensor that requires grad (shape ", v.sizes(),
                        ") but is not among the parameters the gradient is taken for, so its "
                        "gradient would be lost; pass adjoint_params=(every tensor to train, "
                        "e.g. *model.parameters()), or make func an nn.Module (or a bound method of one) "
                        "that owns it");
      continue;
    }
    for (const auto& edge : node->next_edges()) todo.push_back(edge.function);
  }
}

}  // namespace neuralode
