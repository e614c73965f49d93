// Events: the first time a function of the state, g(t, y(t)), changes sign. The
// observer checks g at the end of every accepted step; where its sign changed, the
// event lies inside that step and is located on the step's interpolant (no new
// evaluations of f) by a bracketing root finder, refined to round-off.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace neuralode {

struct EventSpec {
  // g(t, y): one value (t a 0-d tensor), or with `per_sample` one value per row of y
  // (t then a (batch,) tensor of each row's own time). Called without autograd.
  std::function<at::Tensor(const at::Tensor& t, const at::Tensor& y)> fn;
  bool per_sample = false;
};

// The search of one solve: one row (a scalar event) or one per sample, each looking
// for the first change of sign(g) from its sign at the start.
class EventSearch {
 public:
  // `g0` = g(t0, y0), with `rows` values per sample (else one). A row where g0 == 0 has
  // its event at the start (torchdiffeq's rule).
  EventSearch(const EventSpec& spec, const at::Tensor& g0, int64_t rows);

  int64_t rows() const { return static_cast<int64_t>(sign0_.size()); }
  bool done() const { return remaining_ == 0; }
  // The rows whose event is at the start.
  const std::vector<int64_t>& found_at_start() const { return at_start_; }

  // g at the end of an accepted step: the rows (not found before) whose sign changed in it.
  std::vector<int64_t> crossed(const at::Tensor& g1);

  // The root of each crossed row on the step's normalized time theta in [0, 1], by
  // Illinois' regula falsi on [0, 1] (bracketed by g at the step's start and end):
  // `probe(thetas)` returns g with each row at its own theta (other rows: any value).
  // Iterates until each bracket is below `theta_resolution` (the clock's round-off,
  // relative to the step) or g is exactly 0; returns, per crossed row, the bracket's
  // end that still has the initial sign (or the exact zero). The rows are marked found.
  using Probe = std::function<std::vector<double>(const std::vector<double>&)>;
  std::vector<double> refine(const std::vector<int64_t>& rows, const Probe& probe,
                             double theta_resolution);

  // After an accepted step without (or with some) events: g at its end is the next
  // step's g at the start.
  void advance();

 private:
  std::vector<double> sign0_, g_start_, g_end_;
  std::vector<bool> found_;
  std::vector<int64_t> at_start_;
  int64_t remaining_ = 0;
};

// A one-value-per-row (or one value) result of g read to the host; `what` names it in errors.
std::vector<double> event_values(const at::Tensor& g, int64_t rows);

}  // namespace neuralode
