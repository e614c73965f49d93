"""The MNIST experiment: a tiny end-to-end run, its data errors, the memory measure, and DDP.

The data is a synthetic MNIST written as IDX files (the real set is not needed): each
class lights its own 7x7 tile of the 28x28 image, plus noise, so that a few iterations
of a tiny model already learn something.
"""

import json
import os
import socket
import struct

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from neuralode.experiments import distributed, mnist
from neuralode.experiments.mnist_models import build_model
from json_checks import finite_numbers

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path, array: np.ndarray, magic: int) -> None:
    """An IDX file: big-endian magic (2051 images, 2049 labels), one big-endian
    uint32 per dimension, then the unsigned bytes in C order."""
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic))
        fh.write(struct.pack(f">{array.ndim}I", *array.shape))
        fh.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def synthetic_digits(n: int, seed: int):
    """``n`` images (N, 28, 28) uint8 where class c lights tile c of a 4x3 grid of 7x7 tiles."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 4)
        images[i, 7 * r : 7 * r + 7, 7 * q : 7 * q + 7] = 255
    return images, labels


def write_synthetic_mnist(folder, n_train: int = 96, n_test: int = 40) -> str:
    os.makedirs(folder, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(os.path.join(folder, FILES[split][0]), images, 2051)
        write_idx(os.path.join(folder, FILES[split][1]), labels, 2049)
    return str(folder)


def test_mnist_smoke(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data")
    out = tmp_path / "out"
    summary = mnist.main([
        "--data-dir", data, "--out", str(out), "--epochs", "3", "--batch-size", "16", "--width", "8",
        "--hidden", "32", "--eval-every", "6", "--curve-images", "20", "--lr", "0.01", "--no-progress",
    ])
    saved = json.loads((out / "mnist.json").read_text())
    assert set(saved["models"]) == {"mlp", "resnet", "rk-net", "ode-net"}
    assert saved["table"] == summary["table"] and saved["table"].count("\n") == 5
    for name, m in saved["models"].items():
        assert finite_numbers(m), name
        assert len(m["losses"]) == 3 * (96 // 16)
        # the loss falls: mean of the last epoch's batches below the first epoch's
        assert np.mean(m["losses"][-6:]) < np.mean(m["losses"][:6]), name
        assert 0.0 <= m["test_accuracy"] <= 1.0 and m["params"] > 0 and m["memory_bytes"] > 0
        assert len(m["curve"]) >= 3 and len(m["seconds_per_epoch"]) == 3
    for name in ("ode-net", "rk-net"):
        assert min(saved["models"][name]["nfe_forward"]) > 0
        assert saved["models"][name]["nfe_forward_mean"] > 0
    assert min(saved["models"]["ode-net"]["nfe_backward"]) > 0
    assert saved["models"]["rk-net"]["nfe_backward_mean"] is None  # backprop: f is not evaluated again
    for png in ("mnist_training.png", "mnist_nfe.png"):
        assert (out / png).stat().st_size > 1000
    # the full configuration's cosine schedule, down to a small fraction of lr at the end
    assert saved["config"]["schedule"] == "cosine"
    assert 0 < saved["models"]["mlp"]["final_lr"] < 0.01 * 0.01


def test_learning_rate_schedules():
    total = 100
    assert [mnist.lr_factor("constant", i, total) for i in (0, 50, 99)] == [1.0, 1.0, 1.0]
    cosine = [mnist.lr_factor("cosine", i, total) for i in range(total + 1)]
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5) and cosine[total] == pytest.approx(0.0, abs=1e-15)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))  # strictly decreasing
    with pytest.raises(ValueError, match="schedule must be one of"):
        mnist.lr_factor("step", 0, total)


def test_missing_file_names_it_and_download(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data", 16, 8)
    os.remove(os.path.join(data, "t10k-labels-idx1-ubyte"))
    with pytest.raises(SystemExit) as err:
        mnist.main(["--data-dir", data, "--out", str(tmp_path / "out"), "--models", "mlp", "--no-progress"])
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and "--download" in message


def test_corrupt_file_names_it(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data", 16, 8)
    bad = os.path.join(data, "train-images-idx3-ubyte")
    with open(bad, "r+b") as fh:
        fh.write(struct.pack(">I", 1234))  # a wrong magic number
    with pytest.raises(SystemExit) as err:
        mnist.main(["--data-dir", data, "--out", str(tmp_path / "out"), "--models", "mlp", "--no-progress"])
    assert "train-images-idx3-ubyte" in str(err.value) and "magic" in str(err.value)


def _saved_bytes(name: str, max_step: float) -> int:
    torch.manual_seed(0)
    model = build_model(name, width=4, solver={"method": "euler", "options": {"max_step": max_step}})
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    with mnist.SavedTensorMeter(exclude=model.parameters()) as meter:
        loss = F.cross_entropy(model(x), y)
    loss.backward()  # the saved tensors were enough for a backward pass
    return meter.bytes


def test_adjoint_memory_is_flat_in_the_steps_backprop_grows():
    rk_few, rk_many = _saved_bytes("rk-net", 0.5), _saved_bytes("rk-net", 0.1)
    ode_few, ode_many = _saved_bytes("ode-net", 0.5), _saved_bytes("ode-net", 0.1)
    # the adjoint keeps the block's input and output whatever the steps
    assert ode_many == ode_few
    # RK-Net keeps every step's activations: 10 Euler steps against 2 keep well over
    # 3 times the extra bytes (5 times, less what the steps share)
    assert ode_few < rk_few < rk_many
    assert rk_many - ode_many > 3 * (rk_few - ode_few)


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SOLVER = {"method": "rk4_classic", "options": {"max_step": 0.5}}


def _global_batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)


def _model(name: str):
    torch.manual_seed(0)
    model = build_model(name, width=4, solver=SOLVER).double()
    # BatchNorm in eval mode (running statistics): every example is then independent
    # of the others, so the shards' mean gradients average to the global batch's.
    # In training mode each rank would normalize with its own shard's statistics and
    # no process count could match one process (SyncBatchNorm does not run on CPU).
    # A fixed-step solver for the same reason: an adaptive one picks its steps from
    # the error of the whole batch it sees.
    return model.eval()


def _ddp_worker(rank: int, world: int, port: int, name: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ctx = distributed.DistContext(rank, world, rank, "gloo")
        model = _model(name)
        net = distributed.wrap(model, ctx, torch.device("cpu"))
        assert isinstance(net, DistributedDataParallel)
        x, y = _global_batch()
        F.cross_entropy(net(distributed.shard(x, ctx)), distributed.shard(y, ctx)).backward()
        torch.save({n: p.grad for n, p in model.named_parameters()}, os.path.join(out, f"{name}-{rank}.pt"))
        # Both ranks reach here before either tears gloo down: a rank that destroys its
        # group while the other still talks to it can abort the other (SIGABRT, seen once
        # in CI as "terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["ode-net", "rk-net"])
def test_ddp_gradients_equal_one_process_on_the_global_batch(tmp_path, name):
    world = 2
    mp.spawn(_ddp_worker, args=(world, _free_port(), name, str(tmp_path)), nprocs=world, join=True)
    x, y = _global_batch()
    single = _model(name)
    F.cross_entropy(single(x), y).backward()
    local = _model(name)  # rank 0's shard alone, without the all-reduce
    F.cross_entropy(local(x[:4]), y[:4]).backward()
    ode_params = [n for n, _ in single.named_parameters() if n.startswith("block.odef")]
    assert ode_params  # the parameters whose gradients come from the adjoint Function
    for rank in range(world):
        grads = torch.load(tmp_path / f"{name}-{rank}.pt")
        for n, p in single.named_parameters():
            assert grads[n] is not None, n
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-7, atol=1e-10, msg=f"{name} rank {rank}: {n}")
    # the all-reduce changed something: one shard's gradient differs from the global one
    local_grads = dict(local.named_parameters())
    assert any(not torch.allclose(local_grads[n].grad, p.grad) for n, p in single.named_parameters() if n in ode_params)


def test_ode_block_step_of_each_configuration():
    """The full configuration steps the ODE block with 0.25 (its adjoint's gradient 7% off the
    exact gradient of the discrete forward, 23% with 0.5); --quick keeps 0.5; --max-step wins."""
    def solver(*extra):
        args = mnist.build_parser().parse_args(["--data-dir", "unused", *extra])
        return mnist._solver(args, mnist._config(args))

    assert solver() == {"method": "rk4_classic", "options": {"max_step": 0.25}}
    assert solver("--quick") == {"method": "rk4_classic", "options": {"max_step": 0.5}}
    assert solver("--max-step", "0.125") == {"method": "rk4_classic", "options": {"max_step": 0.125}}


def test_ode_norm_of_each_configuration():
    """The full configuration normalizes inside the ODE block's f with GroupNorm, --quick keeps
    the tutorial's BatchNorm (its documented table), --ode-norm wins; the models get it."""
    def config(*extra):
        return mnist._config(mnist.build_parser().parse_args(["--data-dir", "unused", *extra]))

    assert config().ode_norm == "group"
    assert config("--quick").ode_norm == "batch"
    assert config("--ode-norm", "batch").ode_norm == "batch"
    for name in ("ode-net", "rk-net"):
        for norm, kind in (("group", torch.nn.GroupNorm), ("batch", torch.nn.BatchNorm2d)):
            odef = build_model(name, width=8, ode_norm=norm).block.odef
            assert isinstance(odef.norm1, kind) and isinstance(odef.norm2, kind)


def test_conv_odef_group_norm_is_the_same_at_every_t_in_eval_mode():
    """Why the full run uses GroupNorm: with BatchNorm, f in eval mode applies running statistics
    averaged over the solve's stages at every t, so it differs from the f that training saw; with
    GroupNorm train and eval mode are the same function and nothing is kept across evaluations."""
    from neuralode.dynamics import ConvODEF

    torch.manual_seed(0)
    z = torch.randn(16, 8, 6, 6) * 3 + 1
    for norm, same in (("group", True), ("batch", False)):
        f = ConvODEF(8, norm)
        for t in (0.0, 0.5, 1.0):  # a "training solve": evaluations at several t
            f(z + t, torch.tensor(t))
        train_out = f(z, torch.tensor(0.5))
        eval_out = f.eval()(z, torch.tensor(0.5))
        assert torch.allclose(train_out, eval_out, atol=1e-6) is same, norm
        assert (len(list(f.buffers())) == 0) is same, norm
    with pytest.raises(ValueError, match="norm must be one of"):
        ConvODEF(8, "layer")
