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

#include "integrate.h"
#include "tableau.h"

namespace py = pybind11;

namespace neuralode {
namespace {

const Tableau& tableau_or_throw(const std::string& method) {
  const Tableau* tab = find_tableau(method);
  if (tab == nullptr) {
    std::string known;
    for (const std::string& n : tableau_names()) known += (known.empty() ? "" : ", ") + n;
    TORCH_CHECK_VALUE(false, "unknown method '", method, "'; choose one of: ", known);
  }
  return *tab;
}

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
  m.def("methods", &tableau_names, "Names of the available Runge-Kutta methods.");

  m.def(
      "solve_forward",
      torch::wrap_pybind_function([](py::object func, const at::Tensor& y0, const at::Tensor& t, const std::string& method,
         const std::string& step_rule, double step_value, int64_t max_num_steps,
         bool differentiable) {
        Dynamics f = make_dynamics(std::move(func), {});
        const Tableau& tab = tableau_or_throw(method);
        const StepSpec spec = make_spec(step_rule, step_value, max_num_steps);
        ForwardResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_forward(f, y0, t, tab, spec, differentiable);
        }
        return py::make_tuple(r.ys, r.nfe);
      }),
      py::arg("func"), py::arg("y0"), py::arg("t"), py::arg("method"), py::arg("step_rule"),
      py::arg("step_value"), py::arg("max_num_steps"), py::arg("differentiable"),
      "Integrates func(t, z) from y0 through the times t; returns (z at each time, NFE).");

  m.def(
      "solve_adjoint",
      torch::wrap_pybind_function([](py::object func, std::vector<at::Tensor> params, const at::Tensor& t,
         const at::Tensor& ys, const at::Tensor& grad_ys, const std::string& method,
         const std::string& step_rule, double step_value, int64_t max_num_steps, bool need_t) {
        Dynamics f = make_dynamics(std::move(func), std::move(params));
        const Tableau& tab = tableau_or_throw(method);
        const StepSpec spec = make_spec(step_rule, step_value, max_num_steps);
        AdjointResult r;
        {
          py::gil_scoped_release no_gil;
          r = solve_adjoint(f, t, ys, grad_ys, tab, spec, need_t);
        }
        return py::make_tuple(r.grad_y0, r.grad_t, r.grad_params, r.nfe);
      }),
      py::arg("func"), py::arg("params"), py::arg("t"), py::arg("ys"), py::arg("grad_ys"),
      py::arg("method"), py::arg("step_rule"), py::arg("step_value"), py::arg("max_num_steps"),
      py::arg("need_t"),
      "The continuous adjoint: returns (dL/dy0, dL/dt or None, [dL/dtheta], NFE).");
}
