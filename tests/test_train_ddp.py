"""DDP on CPU: two gloo processes compute the gradient one process computes on the same
global batch, keep their weights identical through `train_step`, and `train` runs end to end
under two processes.

The equivalence is checked on the all-reduced gradients, before the optimizer: float sums in
another order differ by rounding there, and Adam would turn those differences in near-zero
gradients into step-sized ones (a tolerance on the weights after a step flakes by machine).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from train_fixtures import micro_config, tiny_spec, write_shards

from miro_train import dist
from miro_train.checkpoint import find_checkpoint, read_meta
from miro_train.conditioning import ConditioningInput
from miro_train.flow import flow_loss
from miro_train.models import build_model
from miro_train.optim import make_optimizer
from miro_train.train import TrainConfig, train, train_step

GLOBAL_BATCH = 8


def _global_batch() -> tuple[torch.Tensor, ConditioningInput, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    x = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    cond = ConditioningInput(
        rewards=torch.rand(GLOBAL_BATCH, 2, generator=g),
        text=torch.randint(2, 10, (GLOBAL_BATCH, 8), generator=g),
    )
    t = torch.rand(GLOBAL_BATCH, generator=g)
    noise = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    return x, cond, t, noise


def _shard(
    rank: int, world: int
) -> tuple[torch.Tensor, ConditioningInput, torch.Tensor, torch.Tensor]:
    """This rank's equal part of the global batch."""
    x, cond, t, noise = _global_batch()
    per = GLOBAL_BATCH // world
    part = slice(rank * per, (rank + 1) * per)
    return x[part], cond[part], t[part], noise[part]


def _model() -> torch.nn.Module:
    """The tiny model with every weight moved off its initialisation (zero-initialised output
    layers would otherwise leave all but the last layer without gradient)."""
    torch.manual_seed(0)
    model = build_model(tiny_spec("unet"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _gradients(rank: int, world: int) -> dict[str, torch.Tensor]:
    """The gradient of the mean loss over the global batch, as this rank holds it."""
    model = _model()
    net = DistributedDataParallel(model) if world > 1 else model
    x, cond, t, noise = _shard(rank, world)
    flow_loss(net, x, cond, t=t, noise=noise).backward()  # DDP averages over ranks here
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _weights_after_steps(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Two `train_step`s (clip + AdamW) under DDP, each rank on its own data and noise."""
    model = _model()
    net = DistributedDataParallel(model)
    optimizer = make_optimizer("adamw", model, 1e-2, 0.01, (0.9, 0.99))
    generator = torch.Generator().manual_seed(100 + rank)
    x, cond, _, _ = _shard(rank, world)
    for _ in range(2):
        train_step(net, model, optimizer, x, cond, generator=generator, grad_clip=0.5)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str, shards: str, config: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        MIRO_NO_PROGRESS="1",
    )
    torch.set_num_threads(1)
    dist.setup("cpu")
    grads = _gradients(rank, world)
    weights: list = [None] * world
    torch.distributed.all_gather_object(weights, _weights_after_steps(rank, world))
    if rank == 0:
        torch.save({"grads": grads, "weights": weights}, Path(out) / "ddp_state.pt")
    # `train` joins the group that is already up (re-initialising on the same port races).
    cfg = TrainConfig(
        shards=Path(shards),
        out=Path(out) / "run",
        model=config,
        steps=3,
        batch_size=8,
        log_every=1,
        ckpt_every=3,
        workers=1,
        device="cpu",
    )
    train(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_and_train(tmp_path):
    shards = write_shards(tmp_path / "shards", n=48, per_shard=16)
    config = micro_config(tmp_path / "micro.json")
    args = (2, _free_port(), str(tmp_path), str(shards), str(config))
    workers = mp.spawn(_worker, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + 300  # a hung collective must fail the test, not the suite
    while not workers.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in workers.processes:
                proc.kill()
            pytest.fail("the two DDP processes did not finish within 300 s")
    ddp = torch.load(tmp_path / "ddp_state.pt")

    # The averaged gradient equals the one-process gradient of the global batch up to float
    # rounding, measured against each tensor's own scale (seen: 3e-6 of it). A missing all-reduce (a half-batch
    # gradient) or a sum instead of a mean (twice the gradient) is off by O(1) of that scale.
    single = _gradients(0, 1)
    assert single.keys() == ddp["grads"].keys() and len(single) > 10
    scales = {name: grad.abs().max().item() for name, grad in single.items()}
    assert sum(s > 0 for s in scales.values()) > 0.9 * len(scales)
    for name, grad in single.items():
        atol = 1e-3 * scales[name]  # 0 for a tensor without gradient: both must be exactly 0
        torch.testing.assert_close(ddp["grads"][name], grad, atol=atol, rtol=1e-3)

    # Every rank holds the same averaged gradient, so the ranks' weights stay identical bit for
    # bit through clipping and AdamW, although each rank saw other samples and noise.
    rank0, rank1 = ddp["weights"]
    start = _model().state_dict()
    assert any(not torch.equal(rank0[k], start[k]) for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key

    meta = read_meta(find_checkpoint(tmp_path / "run"))
    assert meta["step"] == 3 and len(meta["rng"]) == 2  # one RNG state per rank
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 4
