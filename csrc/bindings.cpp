// The Python entry points of the integration loops. Kept in its own small
// translation unit: it is the only one that needs pybind11 and the Python
// headers. The loops take a Python callable f(t, z). They run with the GIL
// released (the autograd engine, which the adjoint calls for its
// vector-Jacobian products, must not be entered holding it) and take it back
// for every call of f.
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/util/Exception.h>

#include <cmath>
#include <string>

#include "adaptive.h"
#include "integrate.h"
#include "tableau.h"

namespace py = pybind11;

namespace neuralode {
namespace {

const Tableau& tableau_or_throw(const std::string& method, bool adaptive) {
  const Tableau* tab = find_tableau(method);
  if (tab == nullptr || tab->adaptive != adaptive) {
    std::string known;
    for (const std::string& n : tableau_names(adaptive)) known += (known.empty() ? "" : ", ") + n;
    TORCH_CHECK_VALUE(false, "unknown ", adaptive ? "adaptive" : "fixed-step", " method '", method,
                      "'; choose one of: ", known);
  }
  return *tab;
}

py::dict stats_dict(const SolveStats& s) {
  py::dict d;
  d["nfe"] = s.nfe;
  d["accepted"] = s.accepted;
  d["rejected"] = s.rejected;
  d["f_seconds"] = s.f_seconds;
  d["total_seconds"] = s.total_seconds;
  return d;
}

// The accepted steps of a forward solve, kept for the checkpointed adjoint.
struct CheckpointTape {
  std::vector<StepRecord> steps;
};

StepSpec make_spec(const std::string& kind, double value, int64_t max_num_steps) {
  StepSpec spec;
  if (kind == "max_step") {
    spec.kind = StepSpec::Kind::kSubdivide;
  } else if (kind == "step_size") {
    spec.kind = StepSpec::Kind::kUniform;
  } else {
    TORCH_CHECK_VALUE(false, "unknown step rule '", kind, "'; use 'max_step' or 'step_size'");
  }
  TORCH_CHECK_VALUE(value > 0 && !std::isnan(value), kind, " must be positive, got ", value);
  TORCH_CHECK_VALUE(max_num_steps > 0, "max_num_steps must be positive, got ", max_num_steps);
  spec.value = value;
  spec.max_num_steps = max_num_steps;
  return spec;
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

  py::class_<StepControl>(m, "StepControl", "Step-size control of an adaptive solve.")
      .def(py::init<>())
      .def_readwrite("rtol", &StepControl::rtol)
      .def_readwrite("atol", &StepControl::atol)
      .def_readwrite("safety", &StepControl::safety)
      .def_readwrite("ifactor", &StepControl::ifactor)
      .def_readwrite("dfactor", &StepControl::dfactor)
      .def_readwrite("pi", &StepControl::pi)
      .def_readwrite("beta1", &StepControl::beta1)
      .def_readwrite("beta2", &StepControl::beta2)
      .def_readwrite("first_step", &StepControl::first_step)
      .def_readwrite("min_step", &StepControl::min_step)
      .def_readwrite("max_step", &StepControl::max_step)
      .def_readwrite("max_num_steps", &StepControl::max_num_steps)
      .def_readwrite("step_t", &StepControl::step_t);

  py::class_<CheckpointTape>(m, "CheckpointTape", "Accepted steps (t, dt, z) of a forward solve.")
      .def("__len__", [](const CheckpointTape& tape) { return tape.steps.size(); });

  m.def(
      "solve_adaptive",
      torch::wrap_pybind_function([](py::object func, const at::Tensor& y0, const at::Tensor& t,
                                     const std::string& method, const StepControl& control,
                                     bool differentiable, bool record) {
        Dynamics f = make_dynamics(std::move(func), {});
        const Tableau& tab = tableau_or_throw(method, true);
        AdaptiveForwardResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_adaptive_forward(f, y0, t, tab, control, differentiable, record);
        }
        py::object tape = py::none();
        if (record) tape = py::cast(CheckpointTape{std::move(r.steps)});
        return py::make_tuple(r.ys, stats_dict(r.stats), tape);
      }),
      py::arg("func"), py::arg("y0"), py::arg("t"), py::arg("method"), py::arg("control"),
      py::arg("differentiable"), py::arg("record"),
      "Adaptive solve through the times t; returns (z at each time, stats, tape or None).");

  m.def(
      "solve_adaptive_adjoint",
      torch::wrap_pybind_function([](py::object func, std::vector<at::Tensor> params,
                                     const at::Tensor& t, const at::Tensor& ys,
                                     const at::Tensor& grad_ys, const std::string& method,
                                     const StepControl& control, bool seminorm, bool need_t) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        const Tableau& tab = tableau_or_throw(method, true);
        AdaptiveAdjointResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_adaptive_adjoint(f, t, ys, grad_ys, tab, control, seminorm, need_t);
        }
        return py::make_tuple(r.grad_y0, r.grad_t, r.grad_params, stats_dict(r.stats));
      }),
      py::arg("func"), py::arg("params"), py::arg("t"), py::arg("ys"), py::arg("grad_ys"),
      py::arg("method"), py::arg("control"), py::arg("seminorm"), py::arg("need_t"),
      "Adaptive continuous adjoint: returns (dL/dy0, dL/dt or None, [dL/dtheta], stats).");

  m.def(
      "solve_checkpoint_adjoint",
      torch::wrap_pybind_function([](py::object func, std::vector<at::Tensor> params,
                                     const at::Tensor& grad_ys, const CheckpointTape& tape,
                                     const std::string& method, const at::Tensor& t) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        const Tableau& tab = tableau_or_throw(method, true);
        AdaptiveAdjointResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_checkpoint_adjoint(f, grad_ys, tape.steps, tab, t);
        }
        return py::make_tuple(r.grad_y0, r.grad_params, stats_dict(r.stats));
      }),
      py::arg("func"), py::arg("params"), py::arg("grad_ys"), py::arg("tape"), py::arg("method"),
      py::arg("t"),
      "Checkpointed discrete adjoint of a recorded solve: returns (dL/dy0, [dL/dtheta], stats).");

  m.def(
      "solve_forward",
      torch::wrap_pybind_function([](py::object func, const at::Tensor& y0, const at::Tensor& t, const std::string& method,
         const std::string& step_rule, double step_value, int64_t max_num_steps,
         bool differentiable) {
        Dynamics f = make_dynamics(std::move(func), {});
        const Tableau& tab = tableau_or_throw(method, false);
        const StepSpec spec = make_spec(step_rule, step_value, max_num_steps);
        ForwardResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_forward(f, y0, t, tab, spec, differentiable);
        }
        return py::make_tuple(r.ys, stats_dict(r.stats));
      }),
      py::arg("func"), py::arg("y0"), py::arg("t"), py::arg("method"), py::arg("step_rule"),
      py::arg("step_value"), py::arg("max_num_steps"), py::arg("differentiable"),
      "Integrates func(t, z) from y0 through the times t; returns (z at each time, stats).");

  m.def(
      "solve_adjoint",
      torch::wrap_pybind_function([](py::object func, std::vector<at::Tensor> params, const at::Tensor& t,
         const at::Tensor& ys, const at::Tensor& grad_ys, const std::string& method,
         const std::string& step_rule, double step_value, int64_t max_num_steps, bool need_t) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        const Tableau& tab = tableau_or_throw(method, false);
        const StepSpec spec = make_spec(step_rule, step_value, max_num_steps);
        AdjointResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_adjoint(f, t, ys, grad_ys, tab, spec, need_t);
        }
        return py::make_tuple(r.grad_y0, r.grad_t, r.grad_params, stats_dict(r.stats));
      }),
      py::arg("func"), py::arg("params"), py::arg("t"), py::arg("ys"), py::arg("grad_ys"),
      py::arg("method"), py::arg("step_rule"), py::arg("step_value"), py::arg("max_num_steps"),
      py::arg("need_t"),
      "The continuous adjoint: returns (dL/dy0, dL/dt or None, [dL/dtheta], stats).");
}
