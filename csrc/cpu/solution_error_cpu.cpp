// CPU kernels of rk_solution_error and rk_solution_error_rows: y1 = y0 + dt * sum_j
// b_j k_j and the sum of squared scaled errors of err = dt * sum_j e_j k_j (over the
// whole state, or per row of it), in one pass over the inputs.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <array>
#include <functional>

#include "../stage_combine.h"
#include "../stage_math.h"

namespace neuralode {
namespace {

constexpr int64_t kBlock = 256;
constexpr int64_t kGrain = 32768;

struct Operands {
  int n_ks;
  int64_t rows, inner;
  bool rtol_each, atol_each;  // one tolerance per element (else one in all)
};

// Elements [begin, end): accumulates both weighted sums over an L1-sized block,
// then closes the block; returns the block range's sum of squared scaled errors.
template <typename scalar_t>
double solution_error_range(const scalar_t* y0, const scalar_t* const* ks,
                            const at::opmath_type<scalar_t>* b, const at::opmath_type<scalar_t>* e,
                            const scalar_t* dt, const scalar_t* rtol, const scalar_t* atol,
                            const Operands& o, scalar_t* y1, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t acc_b[kBlock], acc_e[kBlock];
  double sum = 0.0;
  for (int64_t base = begin; base < end; base += kBlock) {
    const int64_t n = std::min(kBlock, end - base);
    for (int64_t i = 0; i < n; ++i) acc_b[i] = acc_e[i] = acc_t(0);
    for (int j = 0; j < o.n_ks; ++j) {
      const scalar_t* k = ks[j] + base;
      const acc_t cb = b[j], ce = e[j];
      for (int64_t i = 0; i < n; ++i) {
        acc_b[i] = math::stage_accumulate(acc_b[i], cb, static_cast<acc_t>(k[i]));
        acc_e[i] = math::stage_accumulate(acc_e[i], ce, static_cast<acc_t>(k[i]));
      }
    }
    // Close the block: y1 and each element's squared scaled error (into acc_e), then
    // the block's sum in double over four lanes (one serial sum would stall on the adds).
    if (o.rows <= 1 && !o.rtol_each && !o.atol_each) {
      // One step size and one tolerance pair: a loop the compiler vectorizes.
      const acc_t h = dt == nullptr ? acc_t(1) : static_cast<acc_t>(dt[0]);
      const acc_t rt = static_cast<acc_t>(rtol[0]), at = static_cast<acc_t>(atol[0]);
      const scalar_t* y0b = y0 + base;
      scalar_t* y1b = y1 + base;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t out = math::stage_finish(y0b[i], h, acc_b[i]);
        y1b[i] = out;
        acc_e[i] = math::scaled_error_sq<acc_t>(static_cast<acc_t>(y0b[i]), static_cast<acc_t>(out),
                                                h * acc_e[i], rt, at);
      }
    } else {
      for (int64_t i = 0; i < n;) {
        const int64_t row = o.rows > 1 ? (base + i) / o.inner : 0;
        const int64_t stop = o.rows > 1 ? std::min(n, (row + 1) * o.inner - base) : n;
        const acc_t h = dt == nullptr ? acc_t(1) : static_cast<acc_t>(dt[row]);
        for (; i < stop; ++i) {
          const int64_t idx = base + i;
          const scalar_t out = math::stage_finish(y0[idx], h, acc_b[i]);
          y1[idx] = out;
          acc_e[i] = math::scaled_error_sq<acc_t>(
              static_cast<acc_t>(y0[idx]), static_cast<acc_t>(out), h * acc_e[i],
              static_cast<acc_t>(rtol[o.rtol_each ? idx : 0]),
              static_cast<acc_t>(atol[o.atol_each ? idx : 0]));
        }
      }
    }
    double lanes[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int l = 0; l < 4; ++l) lanes[l] += static_cast<double>(acc_e[i + l]);
    }
    for (; i < n; ++i) lanes[0] += static_cast<double>(acc_e[i]);
    sum += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  }
  return sum;
}

// The operands of both kernels as raw pointers and weights in the accumulation type.
template <typename scalar_t>
struct KernelArgs {
  using acc_t = at::opmath_type<scalar_t>;
  Operands o;
  std::array<const scalar_t*, math::kMaxStages> kp{};
  std::array<acc_t, math::kMaxStages> bp{}, ep{};
  const scalar_t *y0, *dt, *rt, *at;
  scalar_t* out;

  KernelArgs(const StageCombineOperands& ops, const at::Tensor& rtol, const at::Tensor& atol,
             at::ArrayRef<double> b, at::ArrayRef<double> e, at::Tensor& y1)
      : o{static_cast<int>(ops.ks.size()), ops.rows, ops.inner, rtol.numel() > 1, atol.numel() > 1},
        y0(ops.y0.data_ptr<scalar_t>()),
        dt(ops.dt ? ops.dt->data_ptr<scalar_t>() : nullptr),
        rt(rtol.data_ptr<scalar_t>()),
        at(atol.data_ptr<scalar_t>()),
        out(y1.data_ptr<scalar_t>()) {
    for (int j = 0; j < o.n_ks; ++j) {
      kp[j] = ops.ks[j].data_ptr<scalar_t>();
      bp[j] = static_cast<acc_t>(b[j]);
      ep[j] = static_cast<acc_t>(e[j]);
    }
  }

  // Elements [begin, end): y1 written, their sum of squared scaled errors returned.
  double range(int64_t begin, int64_t end) const {
    return solution_error_range<scalar_t>(y0, kp.data(), bp.data(), ep.data(), dt, rt, at, o, out, begin, end);
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> rk_solution_error_cpu(
    const at::Tensor& y0_in, at::TensorList ks_in, at::ArrayRef<double> b_in,
    at::ArrayRef<double> e_in, const std::optional<at::Tensor>& dt_in, const at::Tensor& rtol_in,
    const at::Tensor& atol_in) {
  auto [ops, rtol, atol] = check_rk_solution_error(y0_in, ks_in, b_in, e_in, dt_in, rtol_in, atol_in);
  TORCH_CHECK(ops.y0.device().is_cpu(), "rk_solution_error_cpu: y0 must be on the CPU");
  at::Tensor y1 = at::empty_like(ops.y0);
  const int64_t numel = ops.y0.numel();
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES(ops.y0.scalar_type(), "rk_solution_error_cpu", [&] {
    const KernelArgs<scalar_t> a(ops, rtol, atol, b_in, e_in, y1);
    total = at::parallel_reduce(
        0, numel, kGrain, 0.0,
        [&](int64_t begin, int64_t end, double ident) {
          return ident + a.range(begin, end);
        },
        std::plus<double>());
  });
  return {y1, at::scalar_tensor(total, ops.y0.options().dtype(at::kDouble))};
}

std::tuple<at::Tensor, at::Tensor> rk_solution_error_rows_cpu(
    const at::Tensor& y0_in, at::TensorList ks_in, at::ArrayRef<double> b_in,
    at::ArrayRef<double> e_in, const std::optional<at::Tensor>& dt_in, const at::Tensor& rtol_in,
    const at::Tensor& atol_in) {
  auto [ops, rtol, atol] = check_rk_solution_error(y0_in, ks_in, b_in, e_in, dt_in, rtol_in, atol_in);
  TORCH_CHECK(ops.y0.device().is_cpu(), "rk_solution_error_rows_cpu: y0 must be on the CPU");
  TORCH_CHECK(ops.y0.dim() >= 1, "rk_solution_error_rows: y0 needs a first (batch) dimension");
  at::Tensor y1 = at::empty_like(ops.y0);
  const int64_t rows = ops.y0.size(0);
  const int64_t inner = rows > 0 ? ops.y0.numel() / rows : 0;
  at::Tensor sums = at::zeros({rows}, ops.y0.options().dtype(at::kDouble));
  if (inner == 0) return {y1, sums};
  double* out_sums = sums.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(ops.y0.scalar_type(), "rk_solution_error_rows_cpu", [&] {
    const KernelArgs<scalar_t> a(ops, rtol, atol, b_in, e_in, y1);
    // One row per task: the same blocked pass as the whole-state kernel, its sum kept
    // for the row (each row's error ratio steers that sample's step).
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        out_sums[r] = a.range(r * inner, (r + 1) * inner);
      }
    });
  });
  return {y1, sums};
}

}  // namespace neuralode
