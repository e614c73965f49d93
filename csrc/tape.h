// The checkpoint tape: what a forward solve keeps so that the discrete adjoint
// can replay it one step at a time, last first.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "step.h"
#include "tableau.h"

namespace neuralode {

struct TapeStep {
  Step step;                          // its times (with a graph to t when time_graph)
  at::Tensor z0;                      // the state at its start
  std::vector<double> thetas;         // dense output: where each inner observation sits
  std::vector<at::Tensor> lin_thetas; // fixed grid (linear or cubic): the same, as tensors
};

struct Tape {
  const Tableau* tableau = nullptr;
  bool cubic = false;  // fixed grid: observations between grid points by cubic Hermite
  std::vector<TapeStep> steps;
  at::Tensor t;             // the times the steps were placed from
  bool time_graph = false;  // step times carry a graph to t (a leaf): dL/dt by autograd
};

}  // namespace neuralode
