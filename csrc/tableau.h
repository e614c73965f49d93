// Butcher tableaux as constexpr data. Every explicit Runge-Kutta method is one
// `Tableau`; the steppers in integrate.cpp are generic over it, so adding a
// method means adding data here, never a new stepping loop.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "stage_math.h"

namespace neuralode {

using math::kMaxStages;

struct Tableau {
  std::string_view name;
  int stages;
  int order;
  // Nodes c_i, the strictly lower-triangular coupling matrix a_ij (row-major,
  // stages x stages) and the solution weights b_j.
  std::array<double, kMaxStages> c;
  std::array<double, kMaxStages * kMaxStages> a;
  std::array<double, kMaxStages> b;

  constexpr double coupling(int i, int j) const { return a[i * kMaxStages + j]; }
};

// Forward Euler: y1 = y0 + h f(t0, y0).
inline constexpr Tableau kEuler{"euler", 1, 1, {0.0}, {0.0}, {1.0}};

// Explicit midpoint: k1 at (t0 + h/2, y0 + h/2 k0), y1 = y0 + h k1.
inline constexpr Tableau kMidpoint = [] {
  Tableau t{"midpoint", 2, 2, {0.0, 0.5}, {}, {0.0, 1.0}};
  t.a[1 * kMaxStages + 0] = 0.5;
  return t;
}();

// The classic fourth-order Runge-Kutta method (weights 1/6, 1/3, 1/3, 1/6).
// Note: torchdiffeq's "rk4" is the 3/8 rule; ours is the classic one.
inline constexpr Tableau kRK4 = [] {
  Tableau t{"rk4", 4, 4, {0.0, 0.5, 0.5, 1.0}, {}, {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}};
  t.a[1 * kMaxStages + 0] = 0.5;
  t.a[2 * kMaxStages + 1] = 0.5;
  t.a[3 * kMaxStages + 2] = 1.0;
  return t;
}();

inline constexpr std::array<const Tableau*, 3> kFixedStepTableaux{&kEuler, &kMidpoint, &kRK4};

// Returns the tableau called `name`, or nullptr.
inline const Tableau* find_tableau(std::string_view name) {
  for (const Tableau* t : kFixedStepTableaux) {
    if (t->name == name) return t;
  }
  return nullptr;
}

inline std::vector<std::string> tableau_names() {
  std::vector<std::string> names;
  for (const Tableau* t : kFixedStepTableaux) names.emplace_back(t->name);
  return names;
}

}  // namespace neuralode
