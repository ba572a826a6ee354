"""DDP on CPU: two gloo processes take the same optimizer step as one process on the same
global batch, and `train` runs end to end under two processes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from train_fixtures import micro_config, tiny_spec, write_shards

from miro_train import dist
from miro_train.checkpoint import find_checkpoint, read_meta
from miro_train.models import build_model
from miro_train.optim import make_optimizer
from miro_train.train import TrainConfig, train, train_step

GLOBAL_BATCH = 8


def _global_batch() -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    x = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    cond = {
        "rewards": torch.rand(GLOBAL_BATCH, 2, generator=g),
        "text": torch.randint(2, 10, (GLOBAL_BATCH, 8), generator=g),
        "text_mask": None,
    }
    t = torch.rand(GLOBAL_BATCH, generator=g)
    noise = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    return x, cond, t, noise


def _one_step(rank: int, world: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(tiny_spec("unet"))
    net = DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer("adamw", model, 1e-2, 0.01, (0.9, 0.99))
    x, cond, t, noise = _global_batch()
    per = GLOBAL_BATCH // world
    part = slice(rank * per, (rank + 1) * per)
    for _ in range(2):
        train_step(
            net,
            model,
            optimizer,
            x[part],
            {k: v[part] if v is not None else None for k, v in cond.items()},
            t=t[part],
            noise=noise[part],
            grad_clip=0.5,
        )
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
    state = _one_step(rank, world)
    if rank == 0:
        torch.save(state, Path(out) / "ddp_state.pt")
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

    single = _one_step(0, 1)
    ddp = torch.load(tmp_path / "ddp_state.pt")
    assert any(
        not torch.equal(single[k], build_model(tiny_spec("unet")).state_dict()[k]) for k in single
    )
    for key in single:
        # Float sums in another order; Adam turns tiny gradient differences into ~1e-6 steps.
        torch.testing.assert_close(ddp[key], single[key], atol=1e-5, rtol=1e-4)

    meta = read_meta(find_checkpoint(tmp_path / "run"))
    assert meta["step"] == 3 and len(meta["rng"]) == 2  # one RNG state per rank
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 4
