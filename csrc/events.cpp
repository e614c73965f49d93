#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "events.h"

#include <ATen/ops/_to_copy.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace neuralode {
namespace {

// A regula falsi that converges keeps halving its bracket far faster; this many
// rounds only bound a g that is flat at round-off (float32 states).
constexpr int kMaxRounds = 200;

double sign(double x) { return (x > 0) - (x < 0); }

}  // namespace

std::vector<double> event_values(const at::Tensor& g, int64_t rows) {
  TORCH_CHECK_VALUE(g.numel() == rows, "event_fn(t, y) must return ",
                    rows == 1 ? "one value" : "one value per sample (shape (batch,))", ", got shape ",
                    g.sizes());
  const at::Tensor host = g.detach().to(at::kDouble).cpu().contiguous();
  std::vector<double> v(host.data_ptr<double>(), host.data_ptr<double>() + rows);
  for (double x : v) {
    TORCH_CHECK_VALUE(!std::isnan(x), "event_fn(t, y) returned NaN: the event's sign cannot be decided");
  }
  return v;
}

EventSearch::EventSearch(const EventSpec& spec, const at::Tensor& g0, int64_t rows) {
  g_start_ = event_values(g0, spec.per_sample ? rows : 1);
  const size_t n = g_start_.size();
  sign0_.resize(n);
  found_.assign(n, false);
  for (size_t r = 0; r < n; ++r) {
    sign0_[r] = sign(g_start_[r]);
    if (sign0_[r] == 0) {
      found_[r] = true;
      at_start_.push_back(static_cast<int64_t>(r));
    }
  }
  remaining_ = static_cast<int64_t>(n - at_start_.size());
}

std::vector<int64_t> EventSearch::crossed(const at::Tensor& g1) {
  g_end_ = event_values(g1, rows());
  std::vector<int64_t> rows_crossed;
  for (size_t r = 0; r < g_end_.size(); ++r) {
    if (!found_[r] && sign(g_end_[r]) != sign0_[r]) rows_crossed.push_back(static_cast<int64_t>(r));
  }
  return rows_crossed;
}

std::vector<double> EventSearch::refine(const std::vector<int64_t>& rows_crossed, const Probe& probe,
                                        double theta_resolution) {
  const size_t n = sign0_.size();
  // Brackets [a, b] in theta with g(a) of the initial sign and g(b) not; `side`
  // remembers which end moved last (Illinois: an end kept twice has its g halved, so
  // that the secant does not creep towards the root from one side only).
  std::vector<double> a(n, 0.0), b(n, 1.0), fa = g_start_, fb = g_end_, theta(n, 1.0), root(n, 0.0);
  std::vector<int> side(n, 0);
  std::vector<bool> active(n, false);
  for (int64_t r : rows_crossed) active[r] = true;
  const double resolution = std::max(theta_resolution, 4 * std::numeric_limits<double>::epsilon());
  for (int round = 0; round < kMaxRounds; ++round) {
    bool any = false;
    for (size_t r = 0; r < n; ++r) {
      if (!active[r]) continue;
      if (b[r] - a[r] <= resolution) {
        active[r] = false;
        continue;
      }
      double c = (a[r] * fb[r] - b[r] * fa[r]) / (fb[r] - fa[r]);
      // Outside the bracket (fb = 0, or round-off in the secant): bisect.
      if (!(c > a[r] && c < b[r])) c = 0.5 * (a[r] + b[r]);
      if (!(c > a[r] && c < b[r])) {  // the bracket cannot be split: round-off reached
        active[r] = false;
        continue;
      }
      theta[r] = c;
      any = true;
    }
    if (!any) break;
    const std::vector<double> g = probe(theta);
    for (size_t r = 0; r < n; ++r) {
      if (!active[r]) continue;
      const double fc = g[r], c = theta[r];
      if (fc == 0) {  // an exact zero
        a[r] = b[r] = c;
        active[r] = false;
      } else if (sign(fc) == sign0_[r]) {
        a[r] = c;
        fa[r] = fc;
        if (side[r] == -1) fb[r] *= 0.5;
        side[r] = -1;
      } else {
        b[r] = c;
        fb[r] = fc;
        if (side[r] == 1) fa[r] *= 0.5;
        side[r] = 1;
      }
    }
  }
  std::vector<double> found;
  found.reserve(rows_crossed.size());
  for (int64_t r : rows_crossed) {
    found_[r] = true;
    --remaining_;
    found.push_back(a[r]);
  }
  return found;
}

void EventSearch::advance() { g_start_ = g_end_; }

}  // namespace neuralode
