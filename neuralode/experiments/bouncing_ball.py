"""Learn gravity and restitution of a bouncing ball from its bounce times and heights (event handling).

A ball dropped from height ``h0 = 10`` at rest falls under gravity, ``dpos/dt = vel``,
``dvel/dt = -g``; it bounces when it reaches the floor, the root of the event function
``pos``: there the velocity flips and shrinks by the restitution coefficient ``e``,
``vel <- -e vel``. The data (``g = 9.81``, ``e = 0.8``) are the times of the first
``--bounces`` bounces and the heights at ``--points`` times across them, simulated with
the same machinery at tight tolerances (no noise). The model starts from clearly wrong
``g = 7``, ``e = 0.6`` and learns both (``log g`` and ``logit e``) by L-BFGS on the mean
squared errors of the bounce times and of the heights, in units of the first fall time
``T = tau_1^obs`` and of ``h0``,

    loss = mean_k ((tau_k - tau_k^obs) / T)^2 + mean_i ((pos(t_i) - pos_i^obs) / h0)^2,

where the bounce times ``tau_k`` come from ``neuralode.odeint_event`` chained bounce to
bounce (their gradient by the implicit function theorem) and the heights from
``neuralode.odeint`` over each flight, started at the predicted bounce time so that the
gradient also flows through it. The state ``(pos, vel)`` is a tuple of tensors. Writes
``bouncing_ball.png`` (true, initial and learned trajectories with their bounces; loss
and parameter errors through training) and ``bouncing_ball.json``.

Run: ``python -m neuralode.experiments bouncing-ball [--quick] [--iters N] [--out DIR]``.
"""

from __future__ import annotations

import math
import os
import time
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

import neuralode

from . import common

NAME = "bouncing-ball"
DTYPE = torch.float64
#: The true ball, where it is dropped from, and the model's clearly wrong start.
TRUE_G, TRUE_E = 9.81, 0.8
H0 = 10.0
START_G, START_E = 7.0, 0.6
#: After a bounce the ball restarts this far above the floor: at the floor the event
#: function would be at its root and the solver could report the same bounce again
#: (measured: it does; torchdiffeq's example lifts the ball the same way). With the
#: restart from max(pos, 0) (see ``bounce``) any positive lift worked in our runs; 1e-7
#: leaves a margin for roots located less tightly. It delays each later bounce by about
#: LIFT / speed per flight: 1.4e-7 s by the fifth bounce here, far below what the fit resolves.
LIFT = 1e-7
#: The solver of training and plots, and the tighter one that simulates the data. dopri5
#: is exact on the parabolas of free fall, and the event search refines each bounce to
#: round-off on the step's interpolant; the tolerances bound the rest of the error.
SOLVER = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8}
DATA_SOLVER = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}
#: Loss evaluations the line search of one L-BFGS iteration may take.
MAX_LINE_SEARCH = 20
#: name -> (default, quick) of the sizes that --quick changes. From the default start
#: L-BFGS reaches the solver's precision (relative errors ~1e-9) in 11-15 iterations.
SIZES = {"iters": (40, 25), "bounces": (5, 4), "points": (60, 30)}

State = Tuple[Tensor, Tensor]


class BouncingBall(nn.Module):
    """A ball in free fall that bounces on the floor ``pos = 0``.

    Dynamics ``d(pos, vel)/dt = (vel, -g)``, event ``pos = 0`` (falling through the floor),
    and at the event ``(pos, vel) <- (max(pos, 0) + LIFT, -e vel)``. ``g = exp(log_g)`` and
    ``e = sigmoid(logit_e)`` keep gravity positive and the restitution in ``(0, 1)`` whatever
    the optimizer does. The state is a tuple of two tensors of shape ``(1,)``. ``nfe``
    counts the evaluations of the dynamics (forward and backward passes together).
    """

    def __init__(self, g: float, e: float, h0: float = H0):
        super().__init__()
        self.log_g = nn.Parameter(torch.tensor(math.log(g), dtype=DTYPE))
        self.logit_e = nn.Parameter(torch.tensor(math.log(e / (1.0 - e)), dtype=DTYPE))
        self.register_buffer("h0", torch.tensor([h0], dtype=DTYPE))
        self.nfe = 0

    @property
    def g(self) -> Tensor:
        """Gravity ``g = exp(log_g)``."""
        return self.log_g.exp()

    @property
    def e(self) -> Tensor:
        """Restitution coefficient ``e = 1 / (1 + exp(-logit_e))``."""
        return torch.sigmoid(self.logit_e)

    def forward(self, t: Tensor, state: State) -> State:
        """``d(pos, vel)/dt = (vel, -g)``."""
        self.nfe += 1
        pos, vel = state
        return vel, (-self.g).expand_as(vel)

    def event_fn(self, t: Tensor, state: State) -> Tensor:
        """The event function ``pos``: positive in the air, 0 on the floor."""
        return state[0]

    def initial_state(self) -> Tuple[Tensor, State]:
        """``t0 = 0`` and ``(pos, vel) = (h0, 0)``: dropped at rest."""
        zero = torch.zeros(1, dtype=DTYPE, device=self.h0.device)
        return zero[0], (self.h0, zero)

    def bounce(self, state: State) -> State:
        """The state just after a bounce: ``(max(pos, 0) + LIFT, -e vel)``."""
        pos, vel = state
        # A root located from below leaves pos a hair under the floor: restart from the
        # floor either way. (At the event pos = 0 whatever g and e: its gradient, by the
        # implicit function theorem, is 0 on either branch.)
        return pos.clamp_min(0.0) + LIFT, -self.e * vel


def simulate_bounces(model: BouncingBall, n_bounces: int, solver: dict = SOLVER) -> Tuple[List[Tensor], List[State]]:
    """The first ``n_bounces`` bounces: ``(times, starts)``.

    ``times[k]`` is the time ``tau_{k+1}`` of bounce ``k + 1``, the root of ``pos`` reached
    from the state ``starts[k]`` at ``tau_k`` (``tau_0 = 0``, ``starts[0] = (h0, 0)``);
    ``starts[k + 1]`` is the state after that bounce. Each flight is one
    ``neuralode.odeint_event`` from the previous bounce time and state, so ``d tau / d(g, e)``
    follows the chain through every bounce: the implicit function theorem at each root,
    ``d tau = -(dpos at fixed t) / (dpos/dt)``.
    """
    t0, state = model.initial_state()
    times, starts = [], [state]
    for _ in range(n_bounces):
        event_t, solution = neuralode.odeint_event(model, state, t0, event_fn=model.event_fn, **solver)
        state = model.bounce(tuple(s[-1] for s in solution))
        times.append(event_t)
        starts.append(state)
        t0 = event_t
    return times, starts


def heights_at(model: BouncingBall, times: Tensor, bounce_times: List[Tensor], starts: List[State],
               solver: dict = SOLVER) -> Tensor:
    """The model's heights ``pos(t)`` at the sorted ``times`` (all after 0).

    A time ``t`` in ``(tau_k, tau_{k+1}]`` belongs to flight ``k``, solved with
    ``neuralode.odeint`` from ``starts[k]`` over ``[tau_k, t, ...]``; times after the last
    bounce belong to the flight after it. The flights are chosen by the detached bounce
    times (a choice, not differentiable), but each solve starts at the bounce time itself:
    ``pos(t)`` then depends on ``tau_k`` and the loss's gradient reaches ``g`` and ``e``
    through it too.
    """
    bounds = torch.stack([b.detach() for b in bounce_times]) if bounce_times else times.new_zeros(0)
    flight = torch.bucketize(times, bounds)  # tau_k < t <= tau_{k+1}  ->  k
    t0, _ = model.initial_state()
    starts_t = [t0] + list(bounce_times)
    heights = []
    for k in range(len(starts)):
        ts = times[flight == k]
        if ts.numel() == 0:
            continue
        grid = torch.cat([starts_t[k].reshape(1), ts])
        pos, _ = neuralode.odeint(model, starts[k], grid, **solver)
        heights.append(pos[1:, 0])
    return torch.cat(heights)


def make_data(bounces: int, points: int) -> dict:
    """The observations of the true ball (``g = 9.81``, ``e = 0.8``), noiseless.

    ``bounce_times``: its first ``bounces`` bounce times; ``times``: ``points`` times spaced
    evenly inside ``(0, last bounce time)``; ``heights``: its heights there. Simulated with
    the training's machinery at tighter tolerances (``DATA_SOLVER``).
    """
    true = BouncingBall(TRUE_G, TRUE_E)
    with torch.no_grad():
        bounce_times, starts = simulate_bounces(true, bounces, DATA_SOLVER)
        last = float(bounce_times[-1])
        times = torch.linspace(0.0, last, points + 2, dtype=DTYPE)[1:-1]
        heights = heights_at(true, times, bounce_times, starts, DATA_SOLVER)
    return {"bounce_times": torch.stack(bounce_times), "times": times, "heights": heights}


def closed_form_bounce_times(g: float, e: float, h0: float, n: int) -> List[float]:
    """Bounce times of the ideal ball: ``tau_1 = sqrt(2 h0 / g)``, then flights of
    ``tau_{k+1} - tau_k = 2 e^k v1 / g`` with the impact speed ``v1 = sqrt(2 g h0)``."""
    v1 = math.sqrt(2.0 * g * h0)
    taus = [math.sqrt(2.0 * h0 / g)]
    for k in range(1, n):
        taus.append(taus[-1] + 2.0 * e ** k * v1 / g)
    return taus


def loss_fn(model: BouncingBall, data: dict) -> Tensor:
    """The mean squared errors of the bounce times and of the heights, each in the
    problem's own units: times in units of the first observed fall ``T = tau_1^obs``,
    heights in units of the drop height ``h0``,

        loss = mean_k ((tau_k - tau_k^obs) / T)^2 + mean_i ((pos(t_i) - pos_i^obs) / h0)^2.

    Why the scales: the heights' term has local minima (a slow ball whose flights are out
    of phase with the observed ones), and in plain seconds and metres it dominates: with
    4 bounces and 30 heights, L-BFGS stopped in one of them (e.g. g = 2.7, e = 0.5) from 5
    of 25 starts on a grid over g in [3, 20], e in [0.2, 0.97]. The bounce times pin both
    parameters (``tau_1`` gives ``g``, the flights' ratios ``e``); in these units L-BFGS
    reached the truth from all 25 starts, with 4 or 5 bounces.
    """
    bounce_times, starts = simulate_bounces(model, len(data["bounce_times"]))
    observed = data["bounce_times"]
    time_loss = ((torch.stack(bounce_times) - observed) / observed[0]).pow(2).mean()
    heights = heights_at(model, data["times"], bounce_times, starts)
    return time_loss + ((heights - data["heights"]) / model.h0).pow(2).mean()


@torch.no_grad()
def trajectory(model: BouncingBall, n_bounces: int, per_unit: int = 200) -> dict:
    """The model's height over its first ``n_bounces`` bounces and the flight after them,
    up to the next bounce, for plots: ``{"t", "pos", "bounce_times"}`` (numpy arrays)."""
    bounce_times, starts = simulate_bounces(model, n_bounces + 1)
    t0, _ = model.initial_state()
    edges = [float(t0)] + [float(b) for b in bounce_times]
    ts, ps = [], []
    for k in range(n_bounces + 1):
        grid = torch.linspace(edges[k], edges[k + 1], max(int((edges[k + 1] - edges[k]) * per_unit), 2), dtype=DTYPE)
        pos, _ = neuralode.odeint(model, starts[k], grid, **SOLVER)
        ts.append(grid.numpy())
        ps.append(pos[:, 0].numpy())
    return {"t": np.concatenate(ts), "pos": np.concatenate(ps), "bounce_times": np.array(edges[1:n_bounces + 1])}


def fit(model: BouncingBall, data: dict, iters: int, lr: float, desc: str = NAME,
        disable_progress: bool = False) -> dict:
    """L-BFGS (strong Wolfe line search) on :func:`loss_fn`: ``iters`` iterations at most,
    fewer when an iteration no longer moves the parameters.

    Two parameters and a smooth, noiseless loss: a quasi-Newton method converges to the
    solver's precision in 11-15 iterations from the default start, and its line search
    keeps the first steps from the wrong start safe. Returns the loss before each iteration and after the last (one
    per point of the ``(g, e)`` path), the path and the number of loss evaluations.
    """
    # One iteration per step() for the progress bar; max_eval must then be raised from its
    # default (5/4 of max_iter: 1), else the line search stops at its first trial point.
    optimizer = torch.optim.LBFGS(model.parameters(), lr=lr, max_iter=1, max_eval=MAX_LINE_SEARCH,
                                  history_size=10, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-16)
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = loss_fn(model, data)
        loss.backward()
        return loss

    losses, path = [], [(model.g.item(), model.e.item())]
    bar = common.progress(range(iters), desc=desc, disable=disable_progress)
    for it in bar:
        value = optimizer.step(closure).item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at iteration {it}; lower --lr")
        losses.append(value)
        path.append((model.g.item(), model.e.item()))
        # The loss and the (g, e) it was evaluated at: the iterate before this step.
        bar.set_postfix(loss=f"{value:.2e}", g=f"{path[-2][0]:.4f}", e=f"{path[-2][1]:.4f}")
        if path[-1] == path[-2]:
            # L-BFGS found no decrease along its direction: converged as far as the
            # solver's tolerance resolves the loss; further iterations would repeat this.
            break
    bar.close()
    with torch.no_grad():
        losses.append(float(loss_fn(model, data)))
    return {"losses": losses, "path": path, "evaluations": evaluations}


def plot(data: dict, curves: dict, fitted: dict, path: str) -> str:
    """Height over time of the true ball, its observations and each ``curves[label]``
    trajectory with their bounces; the loss and the relative errors of ``g`` and ``e``
    through training."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    styles = {"true": ("k", "-", "o"), "before training": ("tab:red", ":", "x"), "learned": ("tab:blue", "--", "+")}
    for label, traj in curves.items():
        color, ls, marker = styles.get(label, (None, "-", "."))
        ax.plot(traj["t"], traj["pos"], ls, color=color, lw=1.6, label=label)
        ax.plot(traj["bounce_times"], np.zeros_like(traj["bounce_times"]), marker, color=color, ms=9, mew=2,
                ls="none", label=f"{label}: bounces")
    ax.scatter(data["times"].numpy(), data["heights"].numpy(), s=14, c="0.55", zorder=3, label="observed heights")
    for tau in data["bounce_times"].numpy():
        ax.axvline(tau, color="0.8", lw=0.8, zorder=0)
    ax.set(title="Height of the ball (grey lines: observed bounce times)", xlabel="t [s]", ylabel="height [m]")
    ax.set_ylim(-0.5, H0 * 1.08)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax = axes[1]
    its = np.arange(len(fitted["losses"]))
    ax.semilogy(its, fitted["losses"], "k", lw=1.2, label="loss")
    g_path, e_path = np.array(fitted["path"]).T
    ax.semilogy(its, np.abs(g_path / TRUE_G - 1), "tab:green", lw=1.2, label="|g / g_true - 1|")
    ax.semilogy(its, np.abs(e_path / TRUE_E - 1), "tab:purple", lw=1.2, label="|e / e_true - 1|")
    ax.set(title="Training (L-BFGS)", xlabel="iteration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_parser():
    """The command line: the common options plus ``--iters``, ``--bounces``, ``--points``,
    ``--lr``, ``--start-g`` and ``--start-e``; one thread by default."""
    parser = common.experiment_parser(NAME, __doc__.splitlines()[0])
    add = parser.add_argument
    add("--iters", type=int, default=None,
        help=f"most L-BFGS iterations (default {SIZES['iters'][0]}, quick {SIZES['iters'][1]})")
    add("--bounces", type=int, default=None,
        help=f"observed bounces (default {SIZES['bounces'][0]}, quick {SIZES['bounces'][1]})")
    add("--points", type=int, default=None,
        help=f"observed heights (default {SIZES['points'][0]}, quick {SIZES['points'][1]})")
    add("--lr", type=float, default=1.0, help="L-BFGS learning rate (default 1)")
    add("--start-g", type=float, default=START_G, help=f"initial gravity (default {START_G})")
    add("--start-e", type=float, default=START_E, help=f"initial restitution (default {START_E})")
    # One thread: every op is on 1-element tensors; a second thread only adds waiting.
    parser.set_defaults(threads=1)
    return parser


def parse_args(argv):
    """Parses and checks the options, fills the sizes of --quick and sets up seed, threads
    and the output folder: ``(args, out_dir, device)``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    for flag in ("iters", "bounces", "points"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if not args.start_g > 0:
        parser.error(f"--start-g must be positive, got {args.start_g}")
    if not 0 < args.start_e < 1:
        parser.error(f"--start-e must be between 0 and 1, got {args.start_e}")
    device, out_dir = common.setup(args, NAME)
    if device.type != "cpu":
        print(f"note: {NAME} runs on the CPU (one 2-element state gains nothing from {device})")
    return args, out_dir, device


def main(argv=None) -> dict:
    """Runs the experiment with the command-line options ``argv``; returns its summary (the JSON)."""
    args, out_dir, device = parse_args(argv)
    data = make_data(args.bounces, args.points)
    model = BouncingBall(args.start_g, args.start_e)
    before = trajectory(model, args.bounces)

    model.nfe = 0  # count the training's evaluations only
    start = time.perf_counter()
    fitted = fit(model, data, args.iters, args.lr, disable_progress=args.no_progress)
    seconds = time.perf_counter() - start
    nfe = model.nfe

    g, e = model.g.item(), model.e.item()
    errors = {"g": abs(g / TRUE_G - 1.0), "e": abs(e / TRUE_E - 1.0)}
    learned = trajectory(model, args.bounces)
    true = trajectory(BouncingBall(TRUE_G, TRUE_E), args.bounces)
    png = plot(data, {"true": true, "before training": before, "learned": learned}, fitted,
               os.path.join(out_dir, "bouncing_ball.png"))
    with torch.no_grad():
        learned_times = torch.stack(simulate_bounces(model, args.bounces)[0])
    summary = {
        "experiment": NAME,
        "true": {"g": TRUE_G, "e": TRUE_E},
        "start": {"g": args.start_g, "e": args.start_e},
        "learned": {"g": g, "e": e},
        "relative_error": errors,
        "h0": H0,
        "bounces": args.bounces,
        "points": args.points,
        "observed_bounce_times": data["bounce_times"],
        "learned_bounce_times": learned_times,
        "first_loss": fitted["losses"][0],
        "final_loss": fitted["losses"][-1],
        "iterations": len(fitted["path"]) - 1,
        "loss_evaluations": fitted["evaluations"],
        "seconds": seconds,
        "nfe_per_loss_evaluation": nfe / max(fitted["evaluations"], 1),
        "losses": fitted["losses"],
        "path": {"g": [p[0] for p in fitted["path"]], "e": [p[1] for p in fitted["path"]]},
        "solver": SOLVER,
        "data_solver": DATA_SOLVER,
        "run": common.run_info(device, argv),
    }
    json_path = common.write_json(os.path.join(out_dir, "bouncing_ball.json"), summary)
    common.print_summary(
        f"{NAME}: g {g:.4f} (true {TRUE_G}), e {e:.4f} (true {TRUE_E})",
        {
            "start g / e": f"{args.start_g} / {args.start_e}",
            "relative error g / e": f"{errors['g']:.2e} / {errors['e']:.2e}",
            "iterations (loss evaluations)": f"{len(fitted['path']) - 1} ({fitted['evaluations']})",
            "training seconds": seconds,
            "first / final loss": f"{fitted['losses'][0]:.3e} / {fitted['losses'][-1]:.3e}",
        },
        files=(png, json_path),
    )
    return summary


if __name__ == "__main__":
    main()
