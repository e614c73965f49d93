#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "dense_output.h"

#include "stage_combine.h"
#include "stage_math.h"
#include "stages.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/stack.h>

namespace neuralode {
namespace {

// y(t0 + theta h) = y0 + w_y1 (y1 - y0) + h (sum_j w_k[j] k_j + w_f1 f1).
struct DenseWeights {
  double y1;
  std::vector<double> k;
  double f1;
};

DenseWeights dense_weights(const Tableau& tab, double th) {
  const double t2 = th * th, t3 = t2 * th, t4 = t3 * th;
  DenseWeights w{0.0, std::vector<double>(tab.stages, 0.0), 0.0};
  if (tab.has_mid) {
    w.y1 = -5 * t2 + 14 * t3 - 8 * t4;
    const double w_mid = 16 * t2 - 32 * t3 + 16 * t4;
    for (int j = 0; j < tab.stages; ++j) w.k[j] = w_mid * tab.c_mid[j];
    w.k[0] += th - 4 * t2 + 5 * t3 - 2 * t4;
    w.f1 = t2 - 3 * t3 + 2 * t4;
  } else {
    w.y1 = 3 * t2 - 2 * t3;
    w.k[0] = t3 - 2 * t2 + th;
    w.f1 = t3 - t2;
  }
  return w;
}

// The weights of the terms [y0, y1, k_0 .. k_{s-1}, f1] at each theta, row-major (M x terms).
std::vector<double> term_weights(const Tableau& tab, const std::vector<double>& thetas, double h) {
  std::vector<double> weights;
  weights.reserve(thetas.size() * (tab.stages + 3));
  for (double theta : thetas) {
    const DenseWeights w = dense_weights(tab, theta);
    weights.push_back(1.0 - w.y1);
    weights.push_back(w.y1);
    for (int j = 0; j < tab.stages; ++j) weights.push_back(h * w.k[j]);
    weights.push_back(h * w.f1);
  }
  return weights;
}

std::vector<at::Tensor> dense_terms(const Tableau& tab, const at::Tensor& y0, const at::Tensor& y1,
                                    const std::vector<at::Tensor>& ks, const at::Tensor& f1) {
  std::vector<at::Tensor> terms{y0, y1};
  terms.insert(terms.end(), ks.begin(), ks.begin() + tab.stages);
  terms.push_back(f1);
  return terms;
}

}  // namespace

at::Tensor interpolate(const Tableau& tab, const std::vector<double>& thetas, double h,
                       const at::Tensor& y0, const at::Tensor& y1,
                       const std::vector<at::Tensor>& ks, const at::Tensor& f1) {
  const int64_t n_terms = tab.stages + 3;
  std::vector<double> weights = term_weights(tab, thetas, h);
  if (thetas.size() == 1 && n_terms - 1 <= math::kMaxStages) {
    // One time (the common case: an output inside the step): y0 + w_y1 (y1 - y0) +
    // sum_j w_j k_j + w_f1 f1 as one fused stage combination, without stacking the terms
    // into a (terms, n) copy for a matrix product (on a (32, 64, 6, 6) state the stack
    // and product cost as much as a tenth of an evaluation of the MNIST block).
    std::vector<at::Tensor> parts{y1 - y0};
    parts.insert(parts.end(), ks.begin(), ks.begin() + tab.stages);
    parts.push_back(f1);
    return stage_combine(y0, parts, at::ArrayRef<double>(weights).slice(1), std::nullopt).unsqueeze(0);
  }
  const std::vector<at::Tensor> terms = dense_terms(tab, y0, y1, ks, f1);
  const int64_t m = static_cast<int64_t>(thetas.size());
  // copy=true: the weights live in this function's vector, autograd keeps w.
  const at::Tensor w = at::from_blob(weights.data(), {m, n_terms}, at::kDouble)
                           .to(y0.options().requires_grad(false), /*non_blocking=*/false,
                               /*copy=*/true);
  std::vector<int64_t> shape{m};
  shape.insert(shape.end(), y0.sizes().begin(), y0.sizes().end());
  return w.matmul(at::stack(terms).reshape({n_terms, -1})).reshape(shape);
}

at::Tensor interpolate_rows(const Tableau& tab, const std::vector<int64_t>& rows,
                            const std::vector<double>& thetas, const std::vector<double>& hs,
                            const at::Tensor& y0, const at::Tensor& y1,
                            const std::vector<at::Tensor>& ks, const at::Tensor& f1) {
  const int64_t n_terms = tab.stages + 3, m = static_cast<int64_t>(rows.size());
  TORCH_CHECK(y0.dim() >= 1 && thetas.size() == rows.size() && hs.size() == rows.size(),
              "internal: one theta and one step size per output row");
  std::vector<double> weights;
  weights.reserve(m * n_terms);
  for (int64_t r = 0; r < m; ++r) {
    const std::vector<double> w = term_weights(tab, {thetas[r]}, hs[r]);
    weights.insert(weights.end(), w.begin(), w.end());
  }
  // The chosen rows of every term, and each output's weights on them: one batched
  // product (M, 1, terms) x (M, terms, elements).
  const at::Tensor w = at::from_blob(weights.data(), {m, 1, n_terms}, at::kDouble)
                           .to(y0.options().requires_grad(false), /*non_blocking=*/false,
                               /*copy=*/true);
  const at::Tensor index = host_index(rows, y0.device());
  const int64_t batch = y0.size(0);
  const at::Tensor terms = at::stack(dense_terms(tab, y0, y1, ks, f1), 1)
                               .reshape({batch, n_terms, batch == 0 ? 0 : y0.numel() / batch})
                               .index_select(0, index);
  std::vector<int64_t> shape{m};
  shape.insert(shape.end(), y0.sizes().begin() + 1, y0.sizes().end());
  return at::bmm(w, terms).reshape(shape);
}

at::Tensor interpolate_linear(const at::Tensor& z0, const at::Tensor& z1, const at::Tensor& theta) {
  return z0 + rows_view(theta.to(z0.scalar_type()), z0.dim()) * (z1 - z0);
}

at::Tensor interpolate_cubic(const at::Tensor& z0, const at::Tensor& z1, const at::Tensor& f0,
                             const at::Tensor& f1, const at::Tensor& theta, const at::Tensor& dt) {
  const at::Tensor th = rows_view(theta.to(z0.scalar_type()), z0.dim());
  const at::Tensor h = rows_view(dt, z0.dim());
  const at::Tensor rest = 1 - th, th2 = th * th;
  const at::Tensor h00 = (1 + 2 * th) * rest * rest, h10 = th * rest * rest;
  const at::Tensor h01 = th2 * (3 - 2 * th), h11 = th2 * (th - 1);
  return h00 * z0 + h10 * h * f0 + h01 * z1 + h11 * h * f1;
}

}  // namespace neuralode
