"""Prefetch: helpers read and decode shards in plan order, whatever their number, and fail loudly."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from miro_data import prefetch
from miro_data.common import MiroError
from miro_data.decode import decode_image
from miro_data.prefetch import Prefetcher, ShardJob
from miro_data.shards import iter_samples, list_shards


@pytest.fixture
def shards(tmp_path: Path) -> list:
    """Three shards of PNGs of assorted sizes (so chunks fill slots unevenly), one not an image."""
    rng = np.random.default_rng(0)
    for s, n in enumerate((70, 5, 40)):
        with wds.TarWriter(str(tmp_path / f"{s:05d}.tar")) as sink:
            for i in range(n):
                side = int(rng.integers(8, 90))
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), np.uint8)).save(
                    buf, "PNG"
                )
                data = b"not an image" if (s, i) == (2, 7) else buf.getvalue()
                sink.write({"__key__": f"{s}-{i:03d}", "png": data, "txt": f"caption {s} {i}"})
    return list_shards(tmp_path)


def _expected(shards: list) -> list[tuple[str, str, bytes | str]]:
    out = []
    for shard in shards:
        for raw in iter_samples(shard):
            try:
                out.append((shard.name, raw.key, decode_image(raw.image).tobytes()))
            except Exception as err:
                out.append((shard.name, raw.key, str(err)))
    return out


def _read_all(pf: Prefetcher, shards: list) -> list[tuple[str, str, bytes | str]]:
    got = []
    for shard in shards:
        errors: list[str] = []
        for chunk in pf.shard(shard, errors):
            for d in chunk:
                assert d.raw.image is None  # the encoded bytes are dropped once decoded
                got.append((shard.name, d.raw.key, d.error or d.image.tobytes()))
        assert errors == []
    return got


@pytest.mark.parametrize("workers", [0, 1, 2, 5])
def test_every_sample_once_in_order_whatever_the_number_of_helpers(shards, workers) -> None:
    with Prefetcher([ShardJob(s) for s in shards], workers, 10**8) as pf:
        got = _read_all(pf, shards)
    assert got == _expected(shards)
    assert any("not an image" in str(v) for _, _, v in got)


def test_images_larger_than_a_slot_travel_pickled(shards, monkeypatch) -> None:
    monkeypatch.setattr(prefetch, "SLOT_BYTES", 12_000)  # most images here are larger
    with Prefetcher([ShardJob(s) for s in shards], 1, 10**8) as pf:
        assert _read_all(pf, shards) == _expected(shards)


def test_retry_reads_only_the_wanted_keys(shards) -> None:
    keys = frozenset({"0-003", "0-050", "2-039"})
    with Prefetcher([ShardJob(s, keys) for s in shards], 1, 10**8) as pf:
        got = [k for _, k, _ in _read_all(pf, shards)]
    assert got == ["0-003", "0-050", "2-039"]


def test_shards_out_of_plan_order_are_refused(shards) -> None:
    with (
        Prefetcher([ShardJob(s) for s in shards], 1, 10**8) as pf,
        pytest.raises(RuntimeError, match="order"),
    ):
        next(pf.shard(shards[1], []))


def test_a_helper_that_dies_is_an_error_not_a_hang(shards) -> None:
    # depth 1: the helper cannot finish before it is killed, it waits for the reader
    with Prefetcher([ShardJob(s) for s in shards], 1, 10**8, depth=1) as pf:
        process = pf.helpers[0][0]
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        with pytest.raises(MiroError, match="died"):
            _read_all(pf, shards)
