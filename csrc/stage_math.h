// The per-element arithmetic of a Runge-Kutta stage, shared by the CPU and the
// CUDA kernels so that one body is tested everywhere:
//
//     y_i = y0_i + dt * sum_j c_j * k_j[i]
//
// `acc_t` is the accumulation type (at::opmath_type: float for float, double
// for double). The sum is accumulated left to right over j, then scaled once by
// dt, so that a single-derivative combination (Euler) rounds exactly like the
// plain-PyTorch expression `y0 + dt * k`.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NEURALODE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NEURALODE_HOST_DEVICE inline
#endif

namespace neuralode::math {

// The most stages any tableau may have, and so the most stage derivatives one
// stage_combine call takes (the CUDA kernel passes their pointers by value).
constexpr int kMaxStages = 16;

// acc + c * k: one term of the stage sum.
template <typename acc_t>
NEURALODE_HOST_DEVICE acc_t stage_accumulate(acc_t acc, acc_t c, acc_t k) {
  return acc + c * k;
}

// y0 + dt * acc: closes a stage combination.
template <typename scalar_t, typename acc_t>
NEURALODE_HOST_DEVICE scalar_t stage_finish(scalar_t y0, acc_t dt, acc_t acc) {
  return static_cast<scalar_t>(static_cast<acc_t>(y0) + dt * acc);
}

// The whole combination for element i; the CUDA kernel calls this directly,
// the CPU kernel calls the two pieces above in blocked, vectorizable loops.
template <typename scalar_t, typename acc_t>
NEURALODE_HOST_DEVICE scalar_t stage_combine_element(scalar_t y0, const scalar_t* const* ks,
                                                     const acc_t* coeffs, int n_ks, acc_t dt,
                                                     int64_t i) {
  acc_t acc = acc_t(0);
  for (int j = 0; j < n_ks; ++j) {
    acc = stage_accumulate(acc, coeffs[j], static_cast<acc_t>(ks[j][i]));
  }
  return stage_finish(y0, dt, acc);
}

}  // namespace neuralode::math
