// Non-finite values, found without a host synchronization per step: a device flag
// per observation, read once at the end of the solve, which then names the interval
// where the values first became NaN or Inf.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace neuralode {

class FiniteWatch {
 public:
  // Records whether `x` is finite at observation `obs` (one reduction, no sync).
  void record(int64_t obs, const at::Tensor& x);
  // Raises if a recorded value was not finite: "<what> became NaN or Inf between t=.. and
  // t=..", the interval being from the last finite observation to the first one that is
  // not (in the order recorded). One host read for all flags.
  void check(const std::string& what, const at::Tensor& t, const std::string& hint) const;

 private:
  std::vector<int64_t> obs_;
  std::vector<at::Tensor> flags_;
};

// Whether every element of x is finite (one reduction and one host read).
bool all_finite(const at::Tensor& x);

// For each tensor, whether it is finite: one reduction each, one host read for all.
std::vector<bool> finite_each(const std::vector<at::Tensor>& xs);

// Raises when the rows of ys (one per observation) stop being finite, naming the
// interval (one reduction and one host read for the whole solve).
void check_outputs_finite(const at::Tensor& ys, const at::Tensor& t);

}  // namespace neuralode
