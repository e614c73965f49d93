// CUDA kernels of rk_solution_error (y1 and the sum of squared scaled errors in one
// pass) and rk_solution_error_rows (the sums per row). Thin: indexing, a block
// reduction and one atomicAdd per block (or one write per row) around
// math::solution_error_element, the arithmetic the CPU kernel shares.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../stage_combine.h"
#include "../stage_math.h"

namespace neuralode {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
struct StepWeights {
  const scalar_t* ks[math::kMaxStages];
  at::opmath_type<scalar_t> b[math::kMaxStages];
  at::opmath_type<scalar_t> e[math::kMaxStages];
  int n;
};

// The stage derivatives' pointers and both weight lists, passed to a kernel by value.
template <typename scalar_t>
StepWeights<scalar_t> step_weights(const StageCombineOperands& ops, at::ArrayRef<double> b, at::ArrayRef<double> e) {
  using acc_t = at::opmath_type<scalar_t>;
  StepWeights<scalar_t> w{};
  w.n = static_cast<int>(ops.ks.size());
  for (int j = 0; j < w.n; ++j) {
    w.ks[j] = ops.ks[j].data_ptr<scalar_t>();
    w.b[j] = static_cast<acc_t>(b[j]);
    w.e[j] = static_cast<acc_t>(e[j]);
  }
  return w;
}

// The sum of `local` over the block (kThreads threads): warp shuffles, then one value
// per warp through shared memory; valid in thread 0.
__device__ __forceinline__ double block_sum(double local, double* warp_sums) {
  for (int offset = 16; offset > 0; offset /= 2) local += __shfl_down_sync(0xffffffff, local, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = local;
  __syncthreads();
  if (warp == 0) {
    local = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) local += __shfl_down_sync(0xffffffff, local, offset);
  }
  return local;
}

template <typename scalar_t>
__global__ void solution_error_kernel(const scalar_t* __restrict__ y0, StepWeights<scalar_t> w,
                                      const scalar_t* __restrict__ dt, int64_t rows, int64_t inner,
                                      const scalar_t* __restrict__ rtol, bool rtol_each,
                                      const scalar_t* __restrict__ atol, bool atol_each,
                                      scalar_t* __restrict__ y1, double* __restrict__ sum,
                                      int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  double local = 0.0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    const acc_t h = dt == nullptr ? acc_t(1) : static_cast<acc_t>(dt[rows > 1 ? i / inner : 0]);
    local += static_cast<double>(math::solution_error_element<scalar_t, acc_t>(
        y0[i], w.ks, w.b, w.e, w.n, h, static_cast<acc_t>(rtol[rtol_each ? i : 0]),
        static_cast<acc_t>(atol[atol_each ? i : 0]), i, &y1[i]));
  }
  __shared__ double warp_sums[kThreads / 32];
  const double total = block_sum(local, warp_sums);
  if (threadIdx.x == 0) atomicAdd(sum, total);
}

// One block per row (grid-stride over rows): the row's elements by the block's
// threads, the block's sum written to sums[row].
template <typename scalar_t>
__global__ void solution_error_rows_kernel(const scalar_t* __restrict__ y0, StepWeights<scalar_t> w,
                                           const scalar_t* __restrict__ dt, int64_t dt_rows, int64_t rows,
                                           int64_t inner, const scalar_t* __restrict__ rtol, bool rtol_each,
                                           const scalar_t* __restrict__ atol, bool atol_each,
                                           scalar_t* __restrict__ y1, double* __restrict__ sums) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ double warp_sums[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const acc_t h = dt == nullptr ? acc_t(1) : static_cast<acc_t>(dt[dt_rows > 1 ? r : 0]);
    double local = 0.0;
    for (int64_t c = threadIdx.x; c < inner; c += blockDim.x) {
      const int64_t i = r * inner + c;
      local += static_cast<double>(math::solution_error_element<scalar_t, acc_t>(
          y0[i], w.ks, w.b, w.e, w.n, h, static_cast<acc_t>(rtol[rtol_each ? i : 0]),
          static_cast<acc_t>(atol[atol_each ? i : 0]), i, &y1[i]));
    }
    const double total = block_sum(local, warp_sums);
    if (threadIdx.x == 0) sums[r] = total;
    __syncthreads();  // warp_sums is reused by the block's next row
  }
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error_rows_cuda(
    const at::Tensor& y0_in, at::TensorList ks_in, at::ArrayRef<double> b_in,
    at::ArrayRef<double> e_in, const std::optional<at::Tensor>& dt_in, const at::Tensor& rtol_in,
    const at::Tensor& atol_in) {
  auto [ops, rtol, atol] = check_rk_solution_error(y0_in, ks_in, b_in, e_in, dt_in, rtol_in, atol_in);
  TORCH_CHECK(ops.y0.is_cuda(), "rk_solution_error_rows_cuda: y0 must be on a CUDA device");
  TORCH_CHECK(ops.y0.dim() >= 1, "rk_solution_error_rows: y0 needs a first (batch) dimension");
  const c10::cuda::CUDAGuard guard(ops.y0.device());
  at::Tensor y1 = at::empty_like(ops.y0);
  const int64_t rows = ops.y0.size(0);
  const int64_t inner = rows > 0 ? ops.y0.numel() / rows : 0;
  at::Tensor sums = at::zeros({rows}, ops.y0.options().dtype(at::kDouble));
  if (inner == 0) return {y1, sums};
  const int64_t blocks = std::min<int64_t>(rows, 65535);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ops.y0.scalar_type(), "rk_solution_error_rows_cuda", [&] {
    const StepWeights<scalar_t> w = step_weights<scalar_t>(ops, b_in, e_in);
    solution_error_rows_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        ops.y0.data_ptr<scalar_t>(), w, ops.dt ? ops.dt->data_ptr<scalar_t>() : nullptr, ops.rows, rows,
        inner, rtol.data_ptr<scalar_t>(), rtol.numel() > 1, atol.data_ptr<scalar_t>(), atol.numel() > 1,
        y1.data_ptr<scalar_t>(), sums.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y1, sums};
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error_cuda(
    const at::Tensor& y0_in, at::TensorList ks_in, at::ArrayRef<double> b_in,
    at::ArrayRef<double> e_in, const std::optional<at::Tensor>& dt_in, const at::Tensor& rtol_in,
    const at::Tensor& atol_in) {
  auto [ops, rtol, atol] = check_rk_solution_error(y0_in, ks_in, b_in, e_in, dt_in, rtol_in, atol_in);
  TORCH_CHECK(ops.y0.is_cuda(), "rk_solution_error_cuda: y0 must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(ops.y0.device());
  at::Tensor y1 = at::empty_like(ops.y0);
  at::Tensor sum = at::zeros({}, ops.y0.options().dtype(at::kDouble));
  const int64_t numel = ops.y0.numel();
  if (numel == 0) return {y1, sum};
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, 1024);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ops.y0.scalar_type(), "rk_solution_error_cuda", [&] {
    const StepWeights<scalar_t> w = step_weights<scalar_t>(ops, b_in, e_in);
    solution_error_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        ops.y0.data_ptr<scalar_t>(), w, ops.dt ? ops.dt->data_ptr<scalar_t>() : nullptr,
        ops.rows, ops.inner, rtol.data_ptr<scalar_t>(), rtol.numel() > 1,
        atol.data_ptr<scalar_t>(), atol.numel() > 1, y1.data_ptr<scalar_t>(),
        sum.data_ptr<double>(), numel);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y1, sum};
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralode, CUDA, m) {
  m.impl("rk_solution_error", &rk_solution_error_cuda);
  m.impl("rk_solution_error_rows", &rk_solution_error_rows_cuda);
}

}  // namespace neuralode
