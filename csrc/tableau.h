// Butcher tableaux as constexpr data. Every explicit Runge-Kutta method is one
// `Tableau`; the one stage loop (stages.h) is generic over it, so adding a
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
  // Adaptive methods: error weights e_j = b_j - bhat_j of the embedded method
  // (the local error estimate is dt * sum_j e_j k_j). All zero: fixed step.
  std::array<double, kMaxStages> e{};
  bool adaptive = false;
  // First Same As Last: the last stage is f(t + dt, y1), the next step's first.
  bool fsal = false;
  // Dense output: with has_mid, y(t0 + dt/2) = y0 + dt * sum_j c_mid_j k_j feeds a
  // quartic interpolant (4th order); otherwise a cubic Hermite interpolant.
  std::array<double, kMaxStages> c_mid{};
  bool has_mid = false;

  constexpr double coupling(int i, int j) const { return a[i * kMaxStages + j]; }
};

namespace detail {
// Fills a tableau from its rows of a (row i holds a_i0 .. a_i,i-1).
template <size_t N>
constexpr Tableau make_tableau(std::string_view name, int order, std::array<double, N> c,
                               std::array<std::array<double, N>, N> a, std::array<double, N> b) {
  Tableau t{name, static_cast<int>(N), order, {}, {}, {}};
  for (size_t i = 0; i < N; ++i) {
    t.c[i] = c[i];
    t.b[i] = b[i];
    for (size_t j = 0; j < i; ++j) t.a[i * kMaxStages + j] = a[i][j];
  }
  return t;
}

// The same, adaptive: bhat are the embedded method's weights.
template <size_t N>
constexpr Tableau make_adaptive(std::string_view name, int order, std::array<double, N> c,
                                std::array<std::array<double, N>, N> a, std::array<double, N> b,
                                std::array<double, N> bhat, bool fsal) {
  Tableau t = make_tableau<N>(name, order, c, a, b);
  for (size_t i = 0; i < N; ++i) t.e[i] = b[i] - bhat[i];
  t.adaptive = true;
  t.fsal = fsal;
  return t;
}
}  // namespace detail

// Forward Euler: y1 = y0 + h f(t0, y0).
inline constexpr Tableau kEuler = detail::make_tableau<1>("euler", 1, {0.0}, {{{0.0}}}, {1.0});

// Explicit midpoint: k1 at (t0 + h/2, y0 + h/2 k0), y1 = y0 + h k1.
inline constexpr Tableau kMidpoint =
    detail::make_tableau<2>("midpoint", 2, {0.0, 0.5}, {{{0.0, 0.0}, {0.5, 0.0}}}, {0.0, 1.0});

// Kutta's 3/8 rule, 4th order: torchdiffeq's "rk4" (its rk4_alt_step_func). Stages at
// c = 0, 1/3, 2/3, 1; weights 1/8, 3/8, 3/8, 1/8 (a smaller error constant than the
// classic method's for one evaluation more of arithmetic).
inline constexpr Tableau kRK4 = detail::make_tableau<4>(
    "rk4", 4, {0.0, 1.0 / 3, 2.0 / 3, 1.0},
    {{{0, 0, 0, 0}, {1.0 / 3, 0, 0, 0}, {-1.0 / 3, 1.0, 0, 0}, {1.0, -1.0, 1.0, 0}}},
    {1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8});

// The classic fourth-order Runge-Kutta method (weights 1/6, 1/3, 1/3, 1/6): torchdiffeq's
// rk4_step_func, which no torchdiffeq method name selects.
inline constexpr Tableau kRK4Classic = detail::make_tableau<4>(
    "rk4_classic", 4, {0.0, 0.5, 0.5, 1.0},
    {{{0, 0, 0, 0}, {0.5, 0, 0, 0}, {0, 0.5, 0, 0}, {0, 0, 1.0, 0}}},
    {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6});

// Heun's method (explicit trapezoid), 2nd order: torchdiffeq's heun2.
inline constexpr Tableau kHeun2 =
    detail::make_tableau<2>("heun2", 2, {0.0, 1.0}, {{{0.0, 0.0}, {1.0, 0.0}}}, {0.5, 0.5});

// Heun's third-order method: torchdiffeq's heun3.
inline constexpr Tableau kHeun3 = detail::make_tableau<3>(
    "heun3", 3, {0.0, 1.0 / 3, 2.0 / 3},
    {{{0, 0, 0}, {1.0 / 3, 0, 0}, {0, 2.0 / 3, 0}}}, {0.25, 0.0, 0.75});

// Heun 2(1) (torchdiffeq's adaptive_heun): Heun's method, with y0 + h f(t0 + h, y0 + h k0)
// as the embedded one (error weights 1/2, -1/2, as torchdiffeq's); cubic Hermite dense
// output.
inline constexpr Tableau kAdaptiveHeun = detail::make_adaptive<2>(
    "adaptive_heun", 2, {0.0, 1.0}, {{{0.0, 0.0}, {1.0, 0.0}}}, {0.5, 0.5}, {0.0, 1.0}, false);

// Runge-Kutta-Fehlberg 2(1) (Fehlberg 1969; torchdiffeq's fehlberg2): 2nd order with an
// embedded 1st; cubic Hermite dense output.
inline constexpr Tableau kFehlberg2 = detail::make_adaptive<3>(
    "fehlberg2", 2, {0.0, 0.5, 1.0},
    {{{0, 0, 0}, {0.5, 0, 0}, {1.0 / 256, 255.0 / 256, 0}}},
    {1.0 / 512, 255.0 / 256, 1.0 / 512}, {1.0 / 256, 255.0 / 256, 0.0}, false);

// Bogacki-Shampine 3(2), FSAL (Bogacki & Shampine 1989).
inline constexpr Tableau kBosh3 = detail::make_adaptive<4>(
    "bosh3", 3, {0.0, 0.5, 0.75, 1.0},
    {{{0, 0, 0, 0}, {0.5, 0, 0, 0}, {0, 0.75, 0, 0}, {2.0 / 9, 1.0 / 3, 4.0 / 9, 0}}},
    {2.0 / 9, 1.0 / 3, 4.0 / 9, 0.0}, {7.0 / 24, 1.0 / 4, 1.0 / 3, 1.0 / 8}, true);

// Dormand-Prince 5(4), FSAL (Dormand & Prince 1980), with Shampine's midpoint
// weights for 4th-order dense output. The embedded solution is torchdiffeq's
// (1951/21600, ..., 1/60) = b/3 + 2 b_hat/3 for Dormand-Prince's 4th-order b_hat: still
// of order 4, its error estimate is 2/3 of the textbook one, and the same step sequence
// as torchdiffeq's dopri5 is what a port from it expects.
inline constexpr Tableau kDopri5 = [] {
  Tableau t = detail::make_adaptive<7>(
      "dopri5", 5, {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0},
      {{{0, 0, 0, 0, 0, 0, 0},
        {1.0 / 5, 0, 0, 0, 0, 0, 0},
        {3.0 / 40, 9.0 / 40, 0, 0, 0, 0, 0},
        {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0, 0},
        {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0, 0},
        {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0, 0},
        {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0}}},
      {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
      {1951.0 / 21600, 0, 22642.0 / 50085, 451.0 / 720, -12231.0 / 42400, 649.0 / 6300, 1.0 / 60},
      true);
  const double mid[7] = {6025192743.0 / 30085553152 / 2, 0, 51252292925.0 / 65400821598 / 2,
                         -2691868925.0 / 45128329728 / 2, 187940372067.0 / 1594534317056 / 2,
                         -1776094331.0 / 19743644256 / 2, 11237099.0 / 235043384 / 2};
  for (int i = 0; i < 7; ++i) t.c_mid[i] = mid[i];
  t.has_mid = true;
  return t;
}();

// Tsitouras 5(4), FSAL (Tsitouras 2011), with a 4th-order midpoint for dense output.
inline constexpr Tableau kTsit5 = [] {
  constexpr std::array<double, 7> b = {0.09646076681806523, 0.01, 0.4798896504144996,
                                       1.379008574103742, -3.290069515436081, 2.324710524099774, 0};
  // b - bhat, as published.
  constexpr std::array<double, 7> e = {-0.00178001105222577714, -0.0008164344596567469,
                                       0.007880878010261995, -0.1447110071732629,
                                       0.5823571654525552, -0.45808210592918697, 1.0 / 66};
  std::array<double, 7> bhat{};
  for (int i = 0; i < 7; ++i) bhat[i] = b[i] - e[i];
  Tableau t = detail::make_adaptive<7>(
      "tsit5", 5, {0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0},
      {{{0, 0, 0, 0, 0, 0, 0},
        {0.161, 0, 0, 0, 0, 0, 0},
        {-0.008480655492356989, 0.335480655492357, 0, 0, 0, 0, 0},
        {2.897153057105493, -6.359448489975075, 4.3622954328695815, 0, 0, 0, 0},
        {5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525, 0, 0, 0},
        {5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383, 0, 0},
        {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
         2.324710524099774, 0}}},
      b, bhat, true);
  // Midpoint weights for the quartic dense output: the minimum-norm solution of the
  // order-4 conditions at theta = 1/2 (residual ~1e-16; computed offline with lstsq).
  const double mid[7] = {0.1114257489207326,    0.013197067390740974, 0.37783998967297405,
                         -0.01847177222954091,  0.00314279907046211,  0.015778336907996543,
                         -0.0029121697333652774};
  for (int i = 0; i < 7; ++i) t.c_mid[i] = mid[i];
  t.has_mid = true;
  return t;
}();

// Prince-Dormand RK8(7)13M (Prince & Dormand 1981): 8th order with an embedded 7th,
// 13 stages plus the FSAL one. Dense output: a 4th-order midpoint from the minimum-norm
// solution of the order-4 conditions at theta = 1/2 (residual ~1e-17, computed offline
// with lstsq), so observations between steps are 4th-order accurate.
inline constexpr Tableau kDopri8 = [] {
  Tableau t = detail::make_adaptive<14>(
      "dopri8", 8,
      {0.0, 0.05555555555555555, 0.08333333333333333, 0.125, 0.3125, 0.375, 0.1475, 0.465,
       0.5648654513822595, 0.65, 0.9246562776405044, 1.0, 1.0, 1.0},
      {{
      {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.05555555555555555, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.020833333333333332, 0.0625, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.03125, 0.0, 0.09375, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.3125, 0.0, -1.171875, 1.171875, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.0375, 0.0, 0.0, 0.1875, 0.15, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.04791013711111111, 0.0, 0.0, 0.11224871277777777, -0.02550567377777778,
       0.012846823888888888, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.01691798978729228, 0.0, 0.0, 0.3878482784860432, 0.03597736985150033,
       0.19697021421566607, -0.17271385234050185, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.0690957533591923, 0.0, 0.0, -0.6342479767288541, -0.16119757522460407,
       0.13865030945882525, 0.9409286140357562, 0.21163632648194397, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
      {0.1835569968390454, 0.0, 0.0, -2.4687680843155926, -0.29128688781630047,
       -0.026473020233117376, 2.8478387641928005, 0.2813873314698498, 0.12374489986331466, 0.0,
       0.0, 0.0, 0.0, 0.0},
      {-1.2154248173958881, 0.0, 0.0, 16.672608665945774, 0.915741828416818, -6.056605804357471,
       -16.00357359415618, 14.849303086297663, -13.371575735289849, 5.134182648179638, 0.0, 0.0,
       0.0, 0.0},
      {0.25886091643826425, 0.0, 0.0, -4.774485785489205, -0.4350930137770325,
       -3.0494833320722416, 5.5779200399360995, 6.15583158986104, -5.062104586736939,
       2.193926173180679, 0.13462799865933495, 0.0, 0.0, 0.0},
      {0.8224275996265075, 0.0, 0.0, -11.658673257277664, -0.7576221166909362,
       0.7139735881595816, 12.075774986890057, -2.127659113920403, 1.9901662070489554,
       -0.23428647154404028, 0.17589857770794226, 0.0, 0.0, 0.0},
      {0.041747491141530244, 0.0, 0.0, 0.0, 0.0, -0.05545232861123931, 0.2393128072011801,
       0.703510669403443, -0.7597596138144609, 0.6605630309222863, 0.15818748251012332,
       -0.2381095387528628, 0.25, 0.0}}},
      {0.041747491141530244, 0.0, 0.0, 0.0, 0.0, -0.05545232861123931, 0.2393128072011801,
       0.703510669403443, -0.7597596138144609, 0.6605630309222863, 0.15818748251012332,
       -0.2381095387528628, 0.25, 0.0},
      {0.0295532136763535, 0.0, 0.0, 0.0, 0.0, -0.828606276487797, 0.3112409000511183,
       2.467345190599887, -2.546941651841909, 1.4435485836767752, 0.07941559588112729,
       0.044444444444444425, 0.0, 0.0},
      true);
  const std::array<double, 14> mid =
      {0.04344998056115129, -6.57598975273288e-14, 8.138628659892788e-14, 0.09662054025588297,
       0.0981495405619176, 0.08465564341172845, 0.10111965189950059, 0.05838466697968702,
       0.025384636040491015, -0.0008764725863899675, -0.020702539287779688, 0.004604784054538895,
       0.004604784054707121, 0.004604784054549067};
  for (int i = 0; i < 14; ++i) t.c_mid[i] = mid[i];
  t.has_mid = true;
  return t;
}();

// Fixed-step methods first, then adaptive, each group as listed in error messages.
inline constexpr std::array<const Tableau*, 12> kTableaux{
    &kEuler, &kMidpoint, &kRK4, &kRK4Classic, &kHeun2, &kHeun3, &kBosh3, &kDopri5, &kTsit5, &kDopri8,
    &kAdaptiveHeun, &kFehlberg2};

// Returns the tableau called `name`, or nullptr.
inline const Tableau* find_tableau(std::string_view name) {
  for (const Tableau* t : kTableaux) {
    if (t->name == name) return t;
  }
  return nullptr;
}

inline std::vector<std::string> tableau_names(bool adaptive) {
  std::vector<std::string> names;
  for (const Tableau* t : kTableaux) {
    if (t->adaptive == adaptive) names.emplace_back(t->name);
  }
  return names;
}

}  // namespace neuralode
