"""Training under DistributedDataParallel: 2 CPU processes (gloo) give the single-process gradients.

Each of ``WORLD`` spawned ranks takes its contiguous share of one fixed global batch, computes the
mean loss over that share and calls ``backward``; DDP all-reduces and averages the gradients, which
for equal shares is the gradient of the mean loss over the whole batch. The reference runs the same
model on the whole batch in this process. Both train for ``STEPS`` SGD steps, and every parameter's
gradient at every step (on every rank), the per-rank losses and the final parameters are compared
in float64.

Two models: ``AllPole`` wrapped in a small module whose parameters produce stable time-varying
coefficients (per-example through a linear layer, via tanh-bounded reflection coefficients) and a
gain; and ``Phaser(sample_rate=8000.0, stages=2)``, which has its own learnable parameters.
"""
from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from allpole_triton import AllPole, reflection_to_lpc
from allpole_triton.systems.phaser import Phaser

WORLD = 2
GLOBAL_BATCH = 4
T = 256
STEPS = 2
LR = 0.05
CASES = ("allpole", "phaser")
LOOPBACK_INTERFACE = "lo"
CONNECT_TIMEOUT_S = 60.0  # spawn to a connected process group (locally: about 3 s)
TIMEOUT_S = 120.0  # whole spawn, start to finish; also bounds every collective in the workers

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


class LearnedAllPole(nn.Module):
    """``AllPole`` driven by learnable parameters: per-example coefficients from a feature vector
    through a linear layer, a learnable drift over time, and a learnable output gain."""

    def __init__(self, order: int = 4, features: int = 3) -> None:
        super().__init__()
        self.to_reflection = nn.Linear(features, order)
        self.drift = nn.Parameter(0.5 * torch.randn(order))
        self.log_gain = nn.Parameter(torch.tensor(-0.2))
        self.filter = AllPole()

    def coefficients(self, cond: Tensor, length: int) -> Tensor:
        w = torch.linspace(0, 1, length, dtype=cond.dtype).unsqueeze(-1)  # (T, 1)
        raw = self.to_reflection(cond).unsqueeze(-2) + w * self.drift  # (B, T, M)
        return reflection_to_lpc(0.9 * torch.tanh(raw))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return self.log_gain.exp() * self.filter(x, self.coefficients(cond, x.shape[-1]))


def make_model(case: str) -> nn.Module:
    """The same initial model in every process."""
    torch.manual_seed(1234)
    if case == "allpole":
        return LearnedAllPole().double()
    return Phaser(sample_rate=8000.0, stages=2).double()


def make_batch(case: str) -> tuple[Tensor, ...]:
    """The fixed global batch: model inputs followed by the target."""
    g = torch.Generator().manual_seed(99)
    x = torch.randn(GLOBAL_BATCH, T, generator=g, dtype=torch.float64)
    target = torch.randn(GLOBAL_BATCH, T, generator=g, dtype=torch.float64)
    if case == "allpole":
        cond = torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64)
        return x, cond, target
    return x, target


def mean_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    *inputs, target = batch
    return (model(*inputs) - target).square().mean()


def train(model: nn.Module, params: nn.Module, batch: tuple[Tensor, ...]) -> dict:
    """``STEPS`` SGD steps on ``batch``; returns the loss and gradients of each step and the final
    parameters. ``model`` is what is called (possibly the DDP wrapper), ``params`` the bare module."""
    opt = torch.optim.SGD(params.parameters(), lr=LR)
    record = {"losses": [], "grads": []}
    for _ in range(STEPS):
        opt.zero_grad()
        loss = mean_loss(model, batch)
        loss.backward()
        record["losses"].append(loss.detach().clone())
        record["grads"].append({n: p.grad.detach().clone() for n, p in params.named_parameters()})
        opt.step()
    record["params"] = {n: p.detach().clone() for n, p in params.named_parameters()}
    return record


def _shard(batch: tuple[Tensor, ...], rank: int) -> tuple[Tensor, ...]:
    per = GLOBAL_BATCH // WORLD
    return tuple(t[rank * per : (rank + 1) * per] for t in batch)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One DDP rank (runs in a spawned process); writes its record to ``out_dir/rank{rank}.pt``."""
    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except ImportError:
        pass
    progress = Path(out_dir) / f"rank{rank}.progress"
    progress.write_text("started")
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    # Gloo otherwise connects the ranks through the address the hostname resolves to, which a
    # sandboxed CI machine may not route (the ranks then wait out the timeout): stay on loopback.
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_INTERFACE
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=TIMEOUT_S))
    progress.write_text("process group initialised")
    try:
        records = {}
        for case in CASES:
            model = make_model(case)
            ddp = DistributedDataParallel(model)
            records[case] = train(ddp, model, _shard(make_batch(case), rank))
            progress.write_text(f"trained {case}")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(records, Path(out_dir) / f"rank{rank}.pt")
    progress.write_text("done")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def references() -> dict[str, dict]:
    """Single-process training on the whole global batch, per case. It runs before the ranks are
    spawned, so it also compiles the kernels into Numba's on-disk cache, which the ranks then load:
    on a fresh clone they would otherwise compile them cold, three compilers on two cores."""
    torch.set_num_threads(1)
    records = {}
    for case in CASES:
        model = make_model(case)
        records[case] = train(model, model, make_batch(case))
    return records


@pytest.fixture(scope="module")
def ddp_records(tmp_path_factory, references) -> list[dict]:
    """Spawn the ranks once for all cases (after the references); fail (never hang) if one raises
    or they time out."""
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        _worker, args=(WORLD, _free_port(), str(out_dir)), nprocs=WORLD, join=False, start_method="spawn"
    )
    def stages() -> dict[int, str]:
        files = {rank: out_dir / f"rank{rank}.progress" for rank in range(WORLD)}
        return {rank: f.read_text() if f.exists() else "not started" for rank, f in files.items()}

    start = time.monotonic()
    try:
        # join raises ProcessRaisedException / ProcessExitedException (and stops the other ranks)
        # as soon as one rank fails; it returns True once all have exited cleanly.
        while not context.join(timeout=1.0):
            waited = time.monotonic() - start
            if waited > CONNECT_TIMEOUT_S and all(stage == "started" for stage in stages().values()):
                # every rank is inside init_process_group: the machine cannot connect gloo ranks
                # (nothing of ours has run yet), which is an environment limit, not a failure
                pytest.skip(f"gloo could not connect {WORLD} local ranks within {CONNECT_TIMEOUT_S:.0f} s")
            if waited > TIMEOUT_S:
                pytest.fail(f"DDP workers did not finish within {TIMEOUT_S:.0f} s; last stage per rank: {stages()}")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.slow  # two spawned processes: 14-21 s of setup
@pytest.mark.parametrize("case", CASES)
def test_ddp_gradients_match_single_process(case: str, ddp_records: list[dict], references: dict[str, dict]) -> None:
    batch = make_batch(case)
    model = make_model(case)
    reference = references[case]
    names = [n for n, _ in model.named_parameters()]
    assert names, "the model must have parameters"
    tol = dict(rtol=1e-10, atol=1e-13)

    for rank, records in enumerate(ddp_records):
        got = records[case]
        for step in range(STEPS):
            # each rank's loss is the mean over its own shard: the shards differ, and their mean is
            # the reference's mean over the whole batch
            single = mean_loss(model_at(case, reference, step), _shard(batch, rank))
            torch.testing.assert_close(got["losses"][step], single, **tol, msg=f"rank {rank} loss, step {step}")
            assert set(got["grads"][step]) == set(names)
            for name in names:
                torch.testing.assert_close(
                    got["grads"][step][name],
                    reference["grads"][step][name],
                    **tol,
                    msg=lambda m, name=name, step=step: f"rank {rank}, step {step}, grad of {name}: {m}",
                )
        for name in names:
            torch.testing.assert_close(got["params"][name], reference["params"][name], **tol)

    mean_of_ranks = torch.stack([r[case]["losses"][0] for r in ddp_records]).mean()
    torch.testing.assert_close(mean_of_ranks, reference["losses"][0], **tol)
    # the shards really differ, so the averaging is what makes the gradients agree
    assert not torch.equal(ddp_records[0][case]["losses"][0], ddp_records[1][case]["losses"][0])


def model_at(case: str, reference: dict, step: int) -> nn.Module:
    """The single-process model as it was before SGD step ``step`` (replaying the reference)."""
    model = make_model(case)
    with torch.no_grad():
        for done in range(step):
            for name, p in model.named_parameters():
                p -= LR * reference["grads"][done][name]
    return model
