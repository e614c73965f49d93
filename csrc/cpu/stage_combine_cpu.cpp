// CPU kernel of stage_combine: y = y0 + dt * sum_j c_j k_j.
//
// Work is split over threads by element ranges; each range is walked in blocks
// that fit in L1, accumulating one stage derivative at a time over the block so
// that the inner loops are contiguous and vectorize. Each input is read once.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <array>

#include "../stage_combine.h"
#include "../stage_math.h"

namespace neuralode {
namespace {

constexpr int64_t kBlock = 256;
constexpr int64_t kGrain = 32768;

// Combines elements [begin, end). dt is null (h = 1), one value (rows == 1) or one
// value per row of `inner` elements. The stage sum is accumulated over an L1-sized
// block first (contiguous, vectorizable loops), then closed with the row's h: one
// division per row segment, none per element.
template <typename scalar_t>
void combine_range(const scalar_t* y0, const scalar_t* const* ks,
                   const at::opmath_type<scalar_t>* coeffs, int n_ks, const scalar_t* dt,
                   int64_t rows, int64_t inner, scalar_t* out, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t acc[kBlock];
  for (int64_t base = begin; base < end; base += kBlock) {
    const int64_t n = std::min(kBlock, end - base);
    for (int64_t i = 0; i < n; ++i) acc[i] = acc_t(0);
    for (int j = 0; j < n_ks; ++j) {
      const scalar_t* k = ks[j] + base;
      const acc_t c = coeffs[j];
      for (int64_t i = 0; i < n; ++i) {
        acc[i] = math::stage_accumulate(acc[i], c, static_cast<acc_t>(k[i]));
      }
    }
    for (int64_t i = 0; i < n;) {
      const int64_t row = rows > 1 ? (base + i) / inner : 0;
      const int64_t stop = rows > 1 ? std::min(n, (row + 1) * inner - base) : n;
      const acc_t h = dt == nullptr ? acc_t(1) : static_cast<acc_t>(dt[row]);
      for (; i < stop; ++i) out[base + i] = math::stage_finish(y0[base + i], h, acc[i]);
    }
  }
}

}  // namespace

at::Tensor stage_combine_cpu(const at::Tensor& y0_in, at::TensorList ks_in,
                             at::ArrayRef<double> coeffs_in, const std::optional<at::Tensor>& dt_in) {
  StageCombineOperands ops = check_stage_combine(y0_in, ks_in, coeffs_in, dt_in);
  TORCH_CHECK(ops.y0.device().is_cpu(), "stage_combine_cpu: y0 must be on the CPU");
  at::Tensor out = at::empty_like(ops.y0);
  const int64_t numel = ops.y0.numel();
  if (numel == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(ops.y0.scalar_type(), "stage_combine_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int n_ks = static_cast<int>(ops.ks.size());
    std::array<const scalar_t*, math::kMaxStages> kp{};
    std::array<acc_t, math::kMaxStages> cp{};
    for (int j = 0; j < n_ks; ++j) {
      kp[j] = ops.ks[j].data_ptr<scalar_t>();
      cp[j] = static_cast<acc_t>(coeffs_in[j]);
    }
    const scalar_t* y0 = ops.y0.data_ptr<scalar_t>();
    const scalar_t* dt = ops.dt ? ops.dt->data_ptr<scalar_t>() : nullptr;
    scalar_t* y = out.data_ptr<scalar_t>();
    const int64_t rows = ops.rows;
    at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
      combine_range<scalar_t>(y0, kp.data(), cp.data(), n_ks, dt, rows, ops.inner, y, begin, end);
    });
  });
  return out;
}

}  // namespace neuralode
