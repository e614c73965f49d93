#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "stepper.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <algorithm>
#include <optional>

#include "stage_combine.h"

namespace neuralode {

at::Tensor rows_view(const at::Tensor& h, int64_t dim) {
  if (h.dim() == 0) return h;
  std::vector<int64_t> shape(std::max<int64_t>(dim, 1), 1);
  shape[0] = h.numel();
  return h.reshape(shape);
}

at::Tensor Combiner::operator()(const at::Tensor& y0, const std::vector<at::Tensor>& ks,
                                const std::vector<double>& c, const at::Tensor& dt) const {
  std::vector<at::Tensor> used;
  std::vector<double> coeffs;
  for (size_t j = 0; j < ks.size(); ++j) {
    if (c[j] != 0.0) {
      used.push_back(ks[j]);
      coeffs.push_back(c[j]);
    }
  }
  if (used.empty()) return y0;
  std::optional<at::Tensor> h;
  if (dt.defined()) h = dt;
  if (differentiable_) return stage_combine(y0, used, coeffs, h);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return stage_combine(y0, used, coeffs, h);
}

StageCoefficients::StageCoefficients(const Tableau& tab) : a(tab.stages), minus_a(tab.stages) {
  for (int i = 0; i < tab.stages; ++i) {
    for (int j = 0; j < i; ++j) {
      a[i].push_back(tab.coupling(i, j));
      minus_a[i].push_back(-tab.coupling(i, j));
    }
    b.push_back(tab.b[i]);
    minus_b.push_back(-tab.b[i]);
    e.push_back(tab.e[i]);
    minus_e.push_back(-tab.e[i]);
  }
}

at::Tensor stage_time(const Tableau& tab, int i, const at::Tensor& t, const at::Tensor& h) {
  return tab.c[i] == 0.0 ? t : t + h * tab.c[i];
}

}  // namespace neuralode
