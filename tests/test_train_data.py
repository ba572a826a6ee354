"""The WebDataset pipeline: batches, missing rewards, node/worker splitting, exact resume."""

from __future__ import annotations

import json
import math
from itertools import islice

import pytest
import torch
from train_fixtures import write_shards

from miro_data.common import MiroError
from miro_train.data import BatchSpec, check_rewards, make_loader, next_batch, open_shards, peek
from miro_train.text import WordVocab


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return open_shards(write_shards(tmp_path_factory.mktemp("shards"), n=40, per_shard=10))


def _spec(**kw) -> BatchSpec:
    vocab = WordVocab.build(["a photo of a red circle"])
    return BatchSpec(
        **{
            "rewards": ("sharpness", "noise"),
            "batch_size": 4,
            "vocab": vocab,
            "shuffle_buffer": 8,
            **kw,
        }
    )


def test_batches_hold_images_word_ids_and_reward_values(shards):
    batch = next(iter(make_loader(shards, _spec(), workers=0)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["ids"].shape == (4, 16)
    assert batch["rewards"].shape == (4, 2)
    values = batch["rewards"][~batch["rewards"].isnan()]
    assert ((values >= 0) & (values <= 1)).all()


def test_null_bin_values_become_nan(shards):
    seen = {}
    for batch in islice(iter(make_loader(shards, _spec(), workers=0)), 10):
        for key, row in zip(batch["keys"], batch["rewards"], strict=True):
            seen[key] = row
    # The fixture nulls the first reward of every 5th sample.
    assert all(math.isnan(seen[k][0]) == (int(k) % 5 == 0) for k in seen)
    assert not any(math.isnan(v[1]) for v in seen.values())


def _keys(loader, n):
    return [batch["keys"] for batch in islice(iter(loader), n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_exactly_where_it_stopped(shards, workers):
    full = _keys(make_loader(shards, _spec(), workers=workers), 14)  # spans epochs
    for start in (3, 10):
        resumed = _keys(
            make_loader(shards, _spec(), start_batch=start, workers=workers), 14 - start
        )
        assert resumed == full[start:]


@pytest.mark.parametrize("n_shards", [4, 1])  # shard-level split, then sample-level
def test_ranks_and_workers_read_disjoint_parts_covering_an_epoch(tmp_path, n_shards):
    shards = open_shards(write_shards(tmp_path, n=32, per_shard=32 // n_shards))
    spec = _spec(batch_size=2, shuffle_buffer=1)
    seen = []
    for rank in range(2):
        loader = make_loader(shards, spec, rank=rank, world=2, workers=2)
        seen += [k for keys in _keys(loader, 8) for k in keys]  # 8 batches × 2 = 16 per rank
    assert sorted(seen) == [f"{i:07d}" for i in range(32)]


def test_shards_without_reward_fields_are_refused(tmp_path):
    shards = open_shards(write_shards(tmp_path / "s", n=8, with_rewards=False))
    with pytest.raises(MiroError, match="carry no bins for sharpness"):
        check_rewards(shards, ["sharpness"])
    with pytest.raises(MiroError, match="no bin_values"):
        peek(shards, _spec())


def test_a_worker_error_comes_back_as_one_line(tmp_path):
    root = write_shards(tmp_path / "s", n=8, per_shard=4)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["rewards"] = ["sharpness", "noise", "contrast"]  # the samples lack 'contrast'
    (root / "manifest.json").write_text(json.dumps(manifest))
    shards = open_shards(root)
    loader = iter(make_loader(shards, _spec(rewards=("contrast",)), workers=1))
    with pytest.raises(MiroError) as err:
        next_batch(loader)
    assert "\n" not in str(err.value) and "no bin value for reward 'contrast'" in str(err.value)


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(MiroError, match=r"no manifest\.json"):
        open_shards(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(MiroError, match="format"):
        open_shards(tmp_path)


def test_a_corrupt_shard_is_one_line(tmp_path):
    root = write_shards(tmp_path / "s", n=8, per_shard=8)
    (root / "000000.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(MiroError, match="cannot read a shard"):
        peek(open_shards(root), _spec())
