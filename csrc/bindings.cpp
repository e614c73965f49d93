// The Python entry points: one solve specification (built once per odeint call)
// and two calls, the forward solve and its gradient. Kept in its own small
// translation unit: it is the only one that needs pybind11 and the Python
// headers. The loops take a Python callable f(t, z). They run with the GIL
// released (the autograd engine, which the adjoint calls for its
// vector-Jacobian products, must not be entered holding it) and take it back
// for every call of f.
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "integrate.h"
#include "spec.h"
#include "tableau.h"

namespace py = pybind11;

namespace neuralode {
namespace {

py::dict stats_dict(const SolveStats& s) {
  py::dict d;
  d["nfe"] = s.nfe;
  d["accepted"] = s.accepted;
  d["rejected"] = s.rejected;
  d["f_seconds"] = s.f_seconds;
  d["total_seconds"] = s.total_seconds;
  if (!s.row_accepted.empty()) {
    int64_t most = 0, sum = 0;
    for (int64_t n : s.row_accepted) {
      most = std::max(most, n);
      sum += n;
    }
    d["accepted_max"] = most;
    d["accepted_mean"] = static_cast<double>(sum) / static_cast<double>(s.row_accepted.size());
  }
  return d;
}

StepPlan::Grid grid_or_throw(const std::string& name) {
  if (name == "subdivide") return StepPlan::Grid::kSubdivide;
  if (name == "uniform") return StepPlan::Grid::kUniform;
  if (name == "constructed") return StepPlan::Grid::kConstructed;
  TORCH_CHECK_VALUE(false, "unknown step grid '", name, "'; use 'subdivide', 'uniform' or 'constructed'");
}

StepPlan::Interp interp_or_throw(const std::string& name) {
  if (name == "linear") return StepPlan::Interp::kLinear;
  if (name == "cubic") return StepPlan::Interp::kCubic;
  TORCH_CHECK_VALUE(false, "unknown interpolation '", name, "'; use 'linear' or 'cubic'");
}

// Wraps a Python callable grid(t) -> Tensor for the planner, which calls it without the
// GIL (inside the solve): the call and the callable's release take it back.
std::function<at::Tensor(const at::Tensor&)> make_grid_constructor(py::object fn) {
  std::shared_ptr<py::object> held(new py::object(std::move(fn)), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
  return [held](const at::Tensor& t) {
    py::gil_scoped_acquire gil;
    py::object out = (*held)(t);
    TORCH_CHECK_TYPE(THPVariable_Check(out.ptr()), "grid_constructor must return a torch.Tensor, got ",
                     std::string(py::str(py::type::of(out).attr("__name__"))));
    return THPVariable_Unpack(out.ptr());
  };
}

SolveSpec::Gradient gradient_or_throw(const std::string& name) {
  if (name == "backprop") return SolveSpec::Gradient::kBackprop;
  if (name == "adjoint") return SolveSpec::Gradient::kAdjoint;
  if (name == "checkpoint") return SolveSpec::Gradient::kCheckpoint;
  TORCH_CHECK_VALUE(false, "unknown gradient mode '", name, "'");
}

// Wraps a Python callable f(t, z) so that a non-tensor result is a clear error.
Dynamics make_dynamics(py::object func, std::vector<at::Tensor> params) {
  Dynamics::Fn fn = [func = std::move(func)](const at::Tensor& t, const at::Tensor& z) {
    py::gil_scoped_acquire gil;
    py::object out = func(t, z);
    TORCH_CHECK_TYPE(THPVariable_Check(out.ptr()), "func must return a torch.Tensor, got ",
                     std::string(py::str(py::type::of(out).attr("__name__"))));
    return THPVariable_Unpack(out.ptr());
  };
  return Dynamics(std::move(fn), std::move(params));
}

// An event function g(t, y) -> Tensor from a Python callable (None: no event).
std::optional<EventSpec> make_event(py::object fn, bool per_sample) {
  if (fn.is_none()) return std::nullopt;
  auto held = std::shared_ptr<py::object>(new py::object(std::move(fn)), [](py::object* o) {
    py::gil_scoped_acquire gil;
    delete o;
  });
  EventSpec spec;
  spec.per_sample = per_sample;
  spec.fn = [held](const at::Tensor& t, const at::Tensor& y) {
    py::gil_scoped_acquire gil;
    py::object out = (*held)(t, y);
    TORCH_CHECK_TYPE(THPVariable_Check(out.ptr()), "event_fn must return a torch.Tensor, got ",
                     std::string(py::str(py::type::of(out).attr("__name__"))));
    return THPVariable_Unpack(out.ptr());
  };
  return spec;
}

// Step callbacks from a Python (step, accept, reject) triple of callables or None, each
// called as fn(t0, [state parts], dt).
StepCallbacks make_callbacks(const py::object& triple) {
  StepCallbacks cb;
  if (triple.is_none()) return cb;
  auto wrap = [](py::object fn) -> StepCallbacks::Fn {
    if (fn.is_none()) return {};
    auto held = std::shared_ptr<py::object>(new py::object(std::move(fn)), [](py::object* o) {
      py::gil_scoped_acquire gil;
      delete o;
    });
    return [held](const at::Tensor& t0, const std::vector<at::Tensor>& state, const at::Tensor& dt) {
      py::gil_scoped_acquire gil;
      (*held)(t0, state, dt);
    };
  };
  py::tuple fns = triple.cast<py::tuple>();
  TORCH_CHECK_VALUE(fns.size() == 3, "internal: callbacks are (step, accept, reject)");
  cb.step = wrap(fns[0]);
  cb.accept = wrap(fns[1]);
  cb.reject = wrap(fns[2]);
  return cb;
}

// Wraps a Python norm of the scaled errors (a list of tensors -> a number or 0-d tensor).
std::function<double(const std::vector<at::Tensor>&)> make_norm(py::object norm) {
  // Shared: the plan may be copied, and its last copy may be dropped without the GIL.
  auto held = std::shared_ptr<py::object>(new py::object(std::move(norm)), [](py::object* o) {
    py::gil_scoped_acquire gil;
    delete o;
  });
  return [held](const std::vector<at::Tensor>& scaled) {
    py::gil_scoped_acquire gil;
    py::object out = (*held)(scaled);
    return py::float_(out).cast<double>();
  };
}

}  // namespace
}  // namespace neuralode

PYBIND11_MODULE(_C, m) {
  using namespace neuralode;
  m.doc() = "neuralode's fused kernels and integration loops";

  // Each entry point goes through torch::wrap_pybind_function: torch's own error
  // handling turns c10::ValueError / TypeError / Error into Python's ValueError /
  // TypeError / RuntimeError and lets Python exceptions raised in f through. (No
  // global pybind11 exception translator: one would also intercept the errors of
  // torch's own bindings.)
  m.def("methods", &tableau_names, py::arg("adaptive"),
        "Names of the fixed-step (adaptive=False) or adaptive Runge-Kutta methods.");

  // Every field is required: the defaults live in neuralode/spec.py alone.
  py::class_<StepPlan>(m, "StepPlan", "How one direction of a solve places its steps (read-only).")
      .def(py::init([](const std::string& method, const std::string& grid, double step,
                       std::optional<at::Tensor> rtol, std::optional<at::Tensor> atol,
                       double safety, double ifactor, double dfactor, const std::string& controller, double beta1,
                       double beta2, double first_step, double min_step, double max_step,
                       int64_t max_num_steps, std::vector<double> step_t,
                       std::vector<double> jump_t, std::optional<py::object> grid_constructor,
                       const std::string& interp, bool perturb, bool atol_has_zero,
                       std::vector<int64_t> segments, py::object norm, bool norm_first_step,
                       bool per_sample) {
             StepPlan p;
             const Tableau* tab = find_tableau(method);
             TORCH_CHECK_VALUE(tab != nullptr, "unknown method '", method, "'");
             p.tableau = tab;
             p.grid = grid_or_throw(grid);
             p.step = step;
             TORCH_CHECK_VALUE((p.grid == StepPlan::Grid::kConstructed) ==
                                   (grid_constructor.has_value() && !grid_constructor->is_none()),
                               "grid 'constructed' needs a grid_constructor, and only it takes one");
             if (p.grid == StepPlan::Grid::kConstructed) {
               p.grid_constructor = make_grid_constructor(std::move(*grid_constructor));
             }
             p.interp = interp_or_throw(interp);
             p.perturb = perturb;
             if (rtol) p.rtol = *rtol;
             if (atol) {
               p.atol = *atol;
               p.atol_has_zero = atol_has_zero;
             }
             TORCH_CHECK_VALUE(!tab->adaptive || (p.rtol.defined() && p.atol.defined()),
                               "an adaptive method needs rtol and atol");
             p.safety = safety;
             p.ifactor = ifactor;
             p.dfactor = dfactor;
             TORCH_CHECK_VALUE(controller == "I" || controller == "PI" || controller == "predictive",
                               "controller must be 'I', 'PI' or 'predictive', got '", controller, "'");
             p.controller = controller == "PI"           ? StepPlan::Controller::kPI
                            : controller == "predictive" ? StepPlan::Controller::kPredictive
                                                         : StepPlan::Controller::kI;
             p.beta1 = beta1;
             p.beta2 = beta2;
             p.first_step = first_step;
             p.min_step = min_step;
             p.max_step = max_step;
             TORCH_CHECK_VALUE(max_num_steps > 0, "max_num_steps must be positive, got ", max_num_steps);
             p.max_num_steps = max_num_steps;
             p.step_t = std::move(step_t);
             p.jump_t = std::move(jump_t);
             p.segments = std::move(segments);
             if (!norm.is_none()) p.norm = make_norm(std::move(norm));
             p.norm_first_step = norm_first_step;
             TORCH_CHECK_VALUE(!per_sample || tab->adaptive, "per-sample steps need an adaptive method");
             p.per_sample = per_sample;
             return p;
           }),
           py::kw_only(), py::arg("method"), py::arg("grid"), py::arg("step"), py::arg("rtol"),
           py::arg("atol"), py::arg("safety"), py::arg("ifactor"), py::arg("dfactor"),
           py::arg("controller"), py::arg("beta1"), py::arg("beta2"), py::arg("first_step"),
           py::arg("min_step"), py::arg("max_step"), py::arg("max_num_steps"), py::arg("step_t"),
           py::arg("jump_t"), py::arg("grid_constructor"), py::arg("interp"), py::arg("perturb"),
           py::arg("atol_has_zero") = false, py::arg("segments") = std::vector<int64_t>(),
           py::arg("norm") = py::none(), py::arg("norm_first_step") = true, py::arg("per_sample") = false)
      .def_property_readonly("method", [](const StepPlan& p) { return std::string(p.tableau->name); })
      .def_property_readonly("adaptive", &StepPlan::adaptive)
      .def_readonly("step", &StepPlan::step)
      .def_readonly("max_num_steps", &StepPlan::max_num_steps)
      .def_readonly("step_t", &StepPlan::step_t)
      .def_readonly("jump_t", &StepPlan::jump_t)
      .def_readonly("perturb", &StepPlan::perturb)
      .def_readonly("per_sample", &StepPlan::per_sample)
      .def_property_readonly("interp", [](const StepPlan& p) {
        return p.interp == StepPlan::Interp::kCubic ? "cubic" : "linear";
      });

  py::class_<SolveSpec>(m, "SolveSpec", "A whole solve: both directions and the gradient mode (read-only).")
      .def(py::init([](const StepPlan& forward, const StepPlan& backward, const std::string& gradient,
                       bool seminorm) {
             return SolveSpec{forward, backward, gradient_or_throw(gradient), seminorm};
           }),
           py::kw_only(), py::arg("forward"), py::arg("backward"), py::arg("gradient"),
           py::arg("seminorm"))
      .def_readonly("forward", &SolveSpec::forward)
      .def_readonly("backward", &SolveSpec::backward)
      .def_readonly("seminorm", &SolveSpec::seminorm);

  py::class_<Tape, std::shared_ptr<Tape>>(m, "Tape", "Accepted steps (t, dt, z) of a forward solve.")
      .def("__len__", [](const Tape& tape) { return tape.steps.size(); });

  m.def(
      "solve",
      torch::wrap_pybind_function([](const SolveSpec& spec, py::object func, const at::Tensor& y0,
                                     const at::Tensor& t, bool differentiable,
                                     std::vector<at::Tensor> params, bool check_params,
                                     py::object callbacks, py::object event_fn, bool per_sample_event) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        const StepCallbacks cb = make_callbacks(callbacks);
        const std::optional<EventSpec> event = make_event(std::move(event_fn), per_sample_event);
        f.set_check_captured(check_params);
        // A differentiable solve needs no tape (the checkpoint's second derivatives); nor
        // does an event per sample (its gradients re-solve to the event times).
        const bool record = spec.gradient == SolveSpec::Gradient::kCheckpoint && !differentiable &&
                            !(event && event->per_sample);
        Solution r;
        {
          py::gil_scoped_release no_gil;
          r = solve(spec, f, y0, t, differentiable, record, &cb, event ? &*event : nullptr);
        }
        py::object tape = r.tape ? py::cast(r.tape) : py::none();
        if (event) return py::tuple(py::make_tuple(r.ys, stats_dict(r.stats), tape, r.event_t));
        return py::tuple(py::make_tuple(r.ys, stats_dict(r.stats), tape));
      }),
      py::arg("spec"), py::arg("func"), py::arg("y0"), py::arg("t"), py::arg("differentiable"),
      py::arg("params") = std::vector<at::Tensor>(), py::arg("check_params") = false,
      py::arg("callbacks") = py::none(), py::arg("event_fn") = py::none(),
      py::arg("per_sample_event") = false,
      "Integrates func(t, z) from y0 through the times t; returns (z at each time, stats, tape "
      "(gradient 'checkpoint') or None). With check_params, f's first evaluation is searched "
      "for tensors that require grad outside params: an error, their gradient would be lost. "
      "With event_fn(t, z): an event search from t[0] towards t[1] and on, until event_fn "
      "changes sign (per sample with per_sample_event); returns (z at t[0] and at the event, "
      "stats, tape or None, event time).");

  m.def(
      "check_captured",
      torch::wrap_pybind_function([](py::object func, const at::Tensor& t, const at::Tensor& z,
                                     std::vector<at::Tensor> params) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        f.set_check_captured(true);
        py::gil_scoped_release no_gil;
        f(t, z);
      }),
      py::arg("func"), py::arg("t"), py::arg("z"), py::arg("params"),
      "Evaluates func(t, z) once with the solve's check for tensors that require grad outside "
      "params (an error naming the fix), for forwards that run outside the engine.");

  m.def(
      "gradient",
      torch::wrap_pybind_function([](const SolveSpec& spec, py::object func,
                                     std::vector<at::Tensor> params, const at::Tensor& t,
                                     const std::optional<at::Tensor>& ys, const at::Tensor& grad_ys,
                                     std::shared_ptr<Tape> tape, bool need_t, bool create_graph,
                                     py::object callbacks) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        const StepCallbacks cb = make_callbacks(callbacks);
        Gradients g;
        {
          py::gil_scoped_release no_gil;
          if (spec.gradient == SolveSpec::Gradient::kCheckpoint) {
            TORCH_CHECK(tape != nullptr, "gradient 'checkpoint' needs the forward's tape");
            TORCH_CHECK(!create_graph, "internal: the checkpoint's second derivatives re-solve in Python");
            g = replay_gradients(*tape, f, grad_ys, need_t);
          } else {
            TORCH_CHECK(ys.has_value(), "gradient 'adjoint' needs the forward's outputs");
            g = adjoint_gradients(spec, f, t, *ys, grad_ys, need_t, create_graph, &cb);
          }
        }
        py::object grad_t = g.t.defined() ? py::cast(g.t) : py::none();
        return py::make_tuple(g.y0, grad_t, g.params, stats_dict(g.stats));
      }),
      py::arg("spec"), py::arg("func"), py::arg("params"), py::arg("t"), py::arg("ys"),
      py::arg("grad_ys"), py::arg("tape"), py::arg("need_t"), py::arg("create_graph") = false,
      py::arg("callbacks") = py::none(),
      "The gradient of a solve (spec.gradient 'adjoint' or 'checkpoint'): returns (dL/dy0, "
      "dL/dt or None, [dL/dtheta], stats).");
}
