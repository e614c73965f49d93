"""The stage_combine op: values, opcheck (schema, fake, autograd registration) and gradcheck."""

import pytest
import torch

from neuralode._ops import stage_combine

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _naive(y0, ks, coeffs, dt):
    acc = torch.zeros_like(y0)
    for c, k in zip(coeffs, ks):
        acc = acc + c * k
    if dt is None:
        return y0 + acc
    h = dt.reshape(()) if dt.numel() == 1 else dt.reshape((-1,) + (1,) * (y0.dim() - 1))
    return y0 + h * acc


def _operands(shape, n_ks, dt_kind, dtype, device, requires_grad=False):
    g = torch.Generator().manual_seed(n_ks * 31 + len(shape))
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    y0 = mk(*shape)
    ks = [mk(*shape) for _ in range(n_ks)]
    coeffs = [0.5, -1.25, 2.0, 1.0 / 3, 0.1, -0.7][:n_ks]
    dt = {"none": None, "scalar": mk(()), "rows": mk(shape[0])}[dt_kind]
    if requires_grad:
        for x in [y0, *ks] + ([dt] if dt is not None else []):
            x.requires_grad_(True)
    return y0, ks, coeffs, dt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dt_kind", ["none", "scalar", "rows"])
@pytest.mark.parametrize("shape,n_ks", [((7, 3), 1), ((64, 5, 9), 4), ((3, 70001), 6), ((1,), 2)])
def test_stage_combine_values(shape, n_ks, dt_kind, dtype, device):
    y0, ks, coeffs, dt = _operands(shape, n_ks, dt_kind, dtype, device)
    out = stage_combine(y0, ks, coeffs, dt)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(out, _naive(y0, ks, coeffs, dt), rtol=tol, atol=tol)


def test_stage_combine_single_term_rounds_like_torch():
    """Euler's z + h * f rounds exactly like the plain PyTorch expression."""
    y0, ks, _, dt = _operands((1000,), 1, "scalar", torch.float32, "cpu")
    assert torch.equal(stage_combine(y0, ks, [1.0], dt), y0 + dt * ks[0])


def test_stage_combine_no_derivatives_copies_y0():
    y0 = torch.randn(4, 3)
    assert torch.equal(stage_combine(y0, [], [], None), y0)


def test_stage_combine_non_contiguous_inputs():
    y0 = torch.randn(6, 4).T
    k = torch.randn(6, 8)[:, ::2].T
    out = stage_combine(y0, [k], [2.0], torch.tensor(0.5))
    torch.testing.assert_close(out, y0 + 0.5 * 2.0 * k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dt_kind", ["none", "scalar", "rows"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_stage_combine_opcheck(dt_kind, requires_grad, device):
    y0, ks, coeffs, dt = _operands((5, 3), 3, dt_kind, torch.float64, device, requires_grad)
    torch.library.opcheck(torch.ops.neuralode.stage_combine.default, (y0, ks, coeffs, dt))


@pytest.mark.parametrize("dt_kind", ["none", "scalar", "rows"])
def test_stage_combine_gradcheck(dt_kind):
    y0, ks, coeffs, dt = _operands((4, 3), 3, dt_kind, torch.float64, "cpu", requires_grad=True)
    if dt is None:
        fn = lambda y0, *ks: stage_combine(y0, ks, coeffs, None)
        args = (y0, *ks)
    else:
        fn = lambda y0, dt, *ks: stage_combine(y0, ks, coeffs, dt)
        args = (y0, dt, *ks)
    assert torch.autograd.gradcheck(fn, args)
    # The autograd formula (C++) is built from differentiable ops: second derivatives too.
    assert torch.autograd.gradgradcheck(fn, args)


def test_stage_combine_bad_operands_name_the_argument():
    y0 = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"ks\[1\] has shape"):
        stage_combine(y0, [torch.randn(4, 3), torch.randn(3, 4)], [1.0, 1.0], None)
    with pytest.raises(RuntimeError, match="coeffs"):
        stage_combine(y0, [torch.randn(4, 3)], [1.0, 2.0], None)
    with pytest.raises(RuntimeError, match="dt"):
        stage_combine(y0, [torch.randn(4, 3)], [1.0], torch.ones(3))
    with pytest.raises(RuntimeError, match=r"ks\[0\] is"):
        stage_combine(y0, [torch.randn(4, 3, dtype=torch.float64)], [1.0], None)


def test_cpp_error_messages_keep_their_numbers():
    """C++ error messages format numbers (shapes, counts) intact.

    An extension that links a static copy of libstdc++ (some Python builds add
    -static-libstdc++) cuts messages at the first number, or crashes there.
    """
    with pytest.raises(RuntimeError, match=r"ks\[0\] has shape \[2\] but y0 has shape \[3\]"):
        stage_combine(torch.randn(3), [torch.randn(2)], [1.0], None)


# ---------------------------------------------------------------- rk_solution_error

from neuralode._ops import rk_solution_error  # noqa: E402

B = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
E = [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]


def _solution_error_naive(y0, ks, b, e, dt, rtol, atol):
    h = 1.0 if dt is None else (dt.reshape(()) if dt.numel() == 1 else dt.reshape((-1,) + (1,) * (y0.dim() - 1)))
    y1 = y0 + h * sum(c * k for c, k in zip(b, ks))
    err = h * sum(c * k for c, k in zip(e, ks))
    scale = atol.reshape(()) if atol.numel() == 1 else atol.reshape(y0.shape)
    scale = scale + (rtol.reshape(()) if rtol.numel() == 1 else rtol.reshape(y0.shape)) * torch.maximum(y0.abs(), y1.abs())
    return y1, (err / scale).double().pow(2).sum()


def _step_operands(shape, dtype, device, per_element, dt_kind="scalar", requires_grad=False):
    g = torch.Generator().manual_seed(len(shape) + 3)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    y0, ks = mk(*shape), [mk(*shape) for _ in range(7)]
    dt = {"none": None, "scalar": torch.tensor(0.05, dtype=dtype, device=device), "rows": mk(shape[0]).abs()}[dt_kind]
    n = y0.numel() if per_element else 1
    rtol = torch.full((n,), 1e-3, dtype=dtype, device=device)
    atol = torch.rand(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) * 1e-3 + 1e-6
    if requires_grad:
        for x in [y0, *ks]:
            x.requires_grad_(True)
    return y0, ks, dt, rtol, atol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_element", [False, True])
@pytest.mark.parametrize("dt_kind", ["none", "scalar", "rows"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 70001), (1,)])
def test_rk_solution_error_values(shape, dt_kind, per_element, dtype, device):
    y0, ks, dt, rtol, atol = _step_operands(shape, dtype, device, per_element, dt_kind)
    y1, sq = rk_solution_error(y0, ks, B, E, dt, rtol, atol)
    y1_ref, sq_ref = _solution_error_naive(y0, ks, B, E, dt, rtol, atol)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y1, y1_ref, rtol=tol, atol=tol)
    assert sq.dtype == torch.float64 and sq.shape == ()
    torch.testing.assert_close(sq, sq_ref, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_rk_solution_error_opcheck(requires_grad, device):
    y0, ks, dt, rtol, atol = _step_operands((4, 3), torch.float64, device, True, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.neuralode.rk_solution_error.default, (y0, ks, B, E, dt, rtol, atol))


def test_rk_solution_error_gradcheck_of_the_solution():
    y0, ks, dt, rtol, atol = _step_operands((3, 2), torch.float64, "cpu", False, requires_grad=True)
    fn = lambda y0, *ks: rk_solution_error(y0, ks, B, E, dt, rtol, atol)[0]
    assert torch.autograd.gradcheck(fn, (y0, *ks))
    fn_dt = lambda y0, dt, *ks: rk_solution_error(y0, ks, B, E, dt, rtol, atol)[0]
    assert torch.autograd.gradcheck(fn_dt, (y0, dt.detach().requires_grad_(), *ks))
    assert torch.autograd.gradgradcheck(fn_dt, (y0, dt.detach().requires_grad_(), *ks))
    # The error sum steers the step size only: no gradient flows through it.
    _, sum_sq = rk_solution_error(y0, ks, B, E, dt, rtol, atol)
    assert not sum_sq.requires_grad


def test_rk_solution_error_bad_tolerance_shape():
    y0, ks, dt, rtol, _ = _step_operands((4, 3), torch.float64, "cpu", False)
    with pytest.raises(RuntimeError, match=r"atol must hold one value or one per element of y0 \(12\), got 5"):
        rk_solution_error(y0, ks, B, E, dt, rtol, torch.ones(5, dtype=torch.float64))


# ---------------------------------------------------------------- rk_solution_error_rows

from neuralode._ops import rk_solution_error_rows  # noqa: E402


def _rows_naive(y0, ks, b, e, dt, rtol, atol):
    """Each row's sum of squared scaled errors, from the whole-state reference row by row."""
    y1, _ = _solution_error_naive(y0, ks, b, e, dt, rtol, atol)
    h = 1.0 if dt is None else (dt.reshape(()) if dt.numel() == 1 else dt.reshape((-1,) + (1,) * (y0.dim() - 1)))
    err = h * sum(c * k for c, k in zip(e, ks))
    scale = (atol.reshape(()) if atol.numel() == 1 else atol.reshape(y0.shape)) + (
        rtol.reshape(()) if rtol.numel() == 1 else rtol.reshape(y0.shape)) * torch.maximum(y0.abs(), y1.abs())
    return y1, (err / scale).double().pow(2).reshape(y0.shape[0], -1).sum(1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_element", [False, True])
@pytest.mark.parametrize("dt_kind", ["none", "scalar", "rows"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 70001), (1,), (4, 2, 3)])
def test_rk_solution_error_rows_values(shape, dt_kind, per_element, dtype, device):
    y0, ks, dt, rtol, atol = _step_operands(shape, dtype, device, per_element, dt_kind)
    y1, sums = rk_solution_error_rows(y0, ks, B, E, dt, rtol, atol)
    y1_ref, sums_ref = _rows_naive(y0, ks, B, E, dt, rtol, atol)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y1, y1_ref, rtol=tol, atol=tol)
    assert sums.dtype == torch.float64 and sums.shape == (shape[0],)
    torch.testing.assert_close(sums, sums_ref, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)
    # The rows add up to the whole state's sum.
    _, total = rk_solution_error(y0, ks, B, E, dt, rtol, atol)
    torch.testing.assert_close(sums.sum(), total, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_rk_solution_error_rows_opcheck(requires_grad, device):
    y0, ks, dt, rtol, atol = _step_operands((4, 3), torch.float64, device, True, "rows", requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.neuralode.rk_solution_error_rows.default, (y0, ks, B, E, dt, rtol, atol))


def test_rk_solution_error_rows_gradcheck_and_empty_rows():
    y0, ks, dt, rtol, atol = _step_operands((3, 2), torch.float64, "cpu", False, "rows", requires_grad=True)
    fn = lambda y0, dt, *ks: rk_solution_error_rows(y0, ks, B, E, dt, rtol, atol)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (y0, dt.detach().requires_grad_(), *ks))
    empty = torch.zeros(3, 0, dtype=torch.float64)
    _, sums = rk_solution_error_rows(empty, [empty] * 7, B, E, None, rtol[:1], atol[:1])
    assert sums.tolist() == [0.0, 0.0, 0.0]
