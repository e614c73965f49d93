// CUDA kernel of stage_combine: y = y0 + dt * sum_j c_j k_j.
// Thin by design: indexing and launch around math::stage_combine_element, the
// arithmetic the CPU kernel shares. dt is read on the device (no host sync).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../stage_combine.h"
#include "../stage_math.h"

namespace neuralode {
namespace {

// Passed by value: the pointers and coefficients of all stage derivatives.
template <typename scalar_t>
struct StageDerivatives {
  const scalar_t* ks[math::kMaxStages];
  at::opmath_type<scalar_t> coeffs[math::kMaxStages];
  int n;
};

template <typename scalar_t>
__global__ void stage_combine_kernel(const scalar_t* __restrict__ y0,
                                     StageDerivatives<scalar_t> d,
                                     const scalar_t* __restrict__ dt, int64_t rows,
                                     int64_t inner, scalar_t* __restrict__ out, int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    const acc_t h = dt == nullptr ? acc_t(1)
                                  : static_cast<acc_t>(dt[rows > 1 ? i / inner : 0]);
    out[i] = math::stage_combine_element<scalar_t, acc_t>(y0[i], d.ks, d.coeffs, d.n, h, i);
  }
}

at::Tensor stage_combine_cuda(const at::Tensor& y0_in, at::TensorList ks_in,
                              at::ArrayRef<double> coeffs_in,
                              const std::optional<at::Tensor>& dt_in) {
  StageCombineOperands ops = check_stage_combine(y0_in, ks_in, coeffs_in, dt_in);
  TORCH_CHECK(ops.y0.is_cuda(), "stage_combine_cuda: y0 must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(ops.y0.device());
  at::Tensor out = at::empty_like(ops.y0);
  const int64_t numel = ops.y0.numel();
  if (numel == 0) return out;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, 65535LL * 8);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ops.y0.scalar_type(), "stage_combine_cuda", [&] {
    StageDerivatives<scalar_t> d{};
    d.n = static_cast<int>(ops.ks.size());
    for (int j = 0; j < d.n; ++j) {
      d.ks[j] = ops.ks[j].data_ptr<scalar_t>();
      d.coeffs[j] = static_cast<at::opmath_type<scalar_t>>(coeffs_in[j]);
    }
    stage_combine_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        ops.y0.data_ptr<scalar_t>(), d, ops.dt ? ops.dt->data_ptr<scalar_t>() : nullptr,
        ops.rows, ops.inner, out.data_ptr<scalar_t>(), numel);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralode, CUDA, m) { m.impl("stage_combine", &stage_combine_cuda); }

}  // namespace neuralode
