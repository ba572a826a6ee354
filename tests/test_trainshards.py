"""The training-shard format: write → read round trip, the names on disk, old manifests, and
malformed records as one line naming their file (webdataset's tests/test_writer.py style)."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miro_data.common import MiroError
from miro_data.trainshards import (
    FORMAT,
    HookModels,
    Manifest,
    ManifestSource,
    SampleMeta,
    ShardEntry,
    TrainSample,
    read_manifest,
    read_samples,
)
from miro_data.trainshards_write import ShardWriter
from miro_train.data import BatchSpec, open_shards, peek

REWARDS = ("sharpness", "noise")


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _samples() -> list[TrainSample]:
    """Five samples covering every optional part: NaN/None rewards, no image_size, a null
    caption and url, an upper-case suffix, and the hooks' arrays on some samples only."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(5):
        meta = SampleMeta(
            key=f"k{i:03d}",
            caption=None if i == 3 else f"a photo of {i} red circles",
            url=None if i == 3 else f"http://127.0.0.1/{i}.png",
            source_shard="00000",
            edges_version=3,
            scores={"sharpness": math.nan if i == 1 else 0.25 * i, "noise": -1.5 + i},
            bins={"sharpness": None if i == 1 else i, "noise": 4 - i},
            bin_values={"sharpness": None if i == 1 else i / 4, "noise": (4 - i) / 4},
            source={"width": 8, "exif": {"nested": [1, 2]}} if i % 2 else {},
            image_size=None if i == 4 else (8, 8),
        )
        samples.append(
            TrainSample(
                meta,
                caption=meta.caption or "",
                image=_png(i),
                image_ext="PNG" if i == 2 else "png",
                txt_emb=rng.normal(size=(i + 1, 6)).astype(np.float16) if i % 2 == 0 else None,
                latent=rng.normal(size=(4, 2, 2)).astype(np.float16) if i < 2 else None,
            )
        )
    return samples


def _manifest(shards: tuple[ShardEntry, ...]) -> Manifest:
    return Manifest(
        rewards=REWARDS,
        reward_versions={"sharpness": "1", "noise": "2"},
        edges_version=3,
        n_levels={"sharpness": 5, "noise": 5},
        edges={"sharpness": (0.0, 0.25, 0.5, 0.75, 1.0), "noise": (-1.5, -0.5, 0.5, 1.5, 2.5)},
        shards=shards,
        where="noise > -2",
        shuffle_seed=7,
        hooks=HookModels(text="some/encoder", vae=None),
        source=ManifestSource(shards="/data/shards", db="/data/corpus.duckdb"),
        created="2026-01-01T00:00:00+00:00",
    )


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, list[TrainSample], Manifest]:
    samples = _samples()
    with ShardWriter(tmp_path / "out", shard_size=2) as sink:
        for sample in samples:
            sink.write(sample)
        assert not (tmp_path / "out" / "manifest.json").exists()  # the manifest comes last
        manifest = _manifest(sink.shards)
        sink.finish(manifest)
    return tmp_path / "out", samples, manifest


def test_what_is_written_reads_back_field_for_field(written) -> None:
    folder, samples, manifest = written
    assert read_manifest(folder) == manifest
    assert [(s.name, s.count) for s in manifest.shards] == [
        ("000000.tar", 2), ("000001.tar", 2), ("000002.tar", 1),
    ]  # fmt: skip
    assert manifest.total == 5
    back = list(read_samples(folder))
    assert len(back) == len(samples)
    for got, sent in zip(back, samples, strict=True):
        assert got.meta == replace(
            sent.meta, scores={r: None if v != v else v for r, v in sent.meta.scores.items()}
        )  # NaN is written as null: JSON has no NaN
        assert got.caption == sent.caption and got.image == sent.image
        assert got.image_ext == sent.image_ext.lower()
        for name in ("txt_emb", "latent"):
            want, have = getattr(sent, name), getattr(got, name)
            assert (want is None) == (have is None), name
            if want is not None:
                assert have.dtype == np.float16 and np.array_equal(have, want)
    assert back[1].meta.scores["sharpness"] is None and back[1].meta.bins["sharpness"] is None
    assert back[3].meta.caption is None and back[3].caption == ""
    assert back[4].meta.image_size is None and back[0].meta.image_size == (8, 8)


def test_the_names_on_disk(written) -> None:
    """The layout other tools read: pinned literally, so a rename is a visible format change."""
    folder, _, _ = written
    with tarfile.open(folder / "000000.tar") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(
        [f"k000.{m}" for m in ("png", "txt", "json", "txt_emb.npy", "latent.npy")]
        + [f"k001.{m}" for m in ("png", "txt", "json", "latent.npy")]
    )
    with tarfile.open(folder / "000001.tar") as tar:
        assert "k002.png" in tar.getnames()  # the source's PNG suffix, lowercased
        meta = json.loads(tar.extractfile("k002.json").read())
    assert list(meta) == ["key", "caption", "url", "source_shard", "edges_version",
                          "image_size", "scores", "bins", "bin_values", "source"]  # fmt: skip
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["format"] == FORMAT == "miro-shards/2"
    assert list(on_disk) == ["format", "rewards", "reward_versions", "edges_version", "n_levels",
                             "edges", "shards", "total", "where", "shuffle_seed", "hooks",
                             "source", "created"]  # fmt: skip


def test_the_trainer_reads_the_written_folder(written) -> None:
    folder, samples, _ = written
    shards = open_shards(folder)
    assert shards.rewards == list(REWARDS) and shards.counts == (2, 2, 1)
    spec = BatchSpec(rewards=("noise", "sharpness"), batch_size=1, resolution=8, text_emb=True)
    out = peek(shards, spec)
    assert out["key"] == "k000" and out["rewards"] == [1.0, 0.0]
    assert np.array_equal(out["image"], np.asarray(Image.open(io.BytesIO(samples[0].image))))
    assert np.array_equal(out["text_emb"], samples[0].txt_emb)


def test_a_format_1_manifest_still_loads(written) -> None:
    """Shards written before the rename: `n_bins` held the number of levels."""
    folder, _, manifest = written
    old = json.loads((folder / "manifest.json").read_text())
    old["format"], old["n_bins"] = "miro-shards/1", old.pop("n_levels")
    (folder / "manifest.json").write_text(json.dumps(old))
    assert read_manifest(folder) == manifest
    assert open_shards(folder).total == 5


def test_the_digest_names_the_data_not_where_it_lies(written) -> None:
    """Pinned literally: the digest is recorded in experiments' results and compared later."""
    _, _, manifest = written
    digest = manifest.digest()
    assert re.fullmatch(r"[0-9a-f]{16}", digest) and digest == "61d46dd4b985a64a"
    moved = replace(manifest, source=ManifestSource(shards="s3://b/x", db="/other.duckdb"),
                    created="2027-01-01T00:00:00+00:00")  # fmt: skip
    assert moved.digest() == digest
    edges = dict(manifest.edges) | {"noise": (-1.5, -0.5, 0.5, 1.5, 2.6)}
    for changed in (replace(manifest, edges=edges), replace(manifest, shuffle_seed=8),
                    replace(manifest, n_levels={"sharpness": 5, "noise": 4}),
                    replace(manifest, where=None), replace(manifest, shards=manifest.shards[:2])):  # fmt: skip
        assert changed.digest() != digest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: "{not json", "invalid JSON"),
        (lambda m: [m], "not an object"),
        (lambda m: m | {"format": "miro-shards/9"}, "format 'miro-shards/9'"),
        (lambda m: {k: v for k, v in m.items() if k != "edges_version"}, "no 'edges_version'"),
        (lambda m: m | {"n_levels": {"noise": "5"}}, "'n_levels.noise' is a string"),
        (lambda m: m | {"rewards": "noise"}, "'rewards' is a string"),
        (lambda m: m | {"total": 6}, "'total' is 6, the shards hold 5"),
        (lambda m: m | {"shards": [{"name": "../x.tar", "count": 5}]}, "not a file name"),
        (lambda m: m | {"shards": [{"name": "000000.tar", "count": -5}]}, "'shards[].count'"),
        (lambda m: m | {"hooks": {"text": 3, "vae": None}}, "'hooks.text' is the number 3"),
        (lambda m: m | {"source": None}, "'source' is null"),
        (lambda m: m | {"shuffle_seed": True}, "'shuffle_seed' is a boolean"),
    ],
)
def test_a_malformed_manifest_is_one_line_naming_it(written, change, message) -> None:
    folder, _, _ = written
    path = folder / "manifest.json"
    changed = change(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(MiroError, match=re.escape(message)) as err:
        open_shards(folder)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bins", {"noise": "3", "sharpness": 1}, "'bins.noise' is a string"),
        ("bin_values", [0.5], "'bin_values' is an array"),
        ("image_size", [8, 0], "'image_size' is the number 0"),
        ("key", "other", "its key is 'other'"),
        ("edges_version", None, "'edges_version' is null"),
    ],
)
def test_a_malformed_sample_json_is_one_line_naming_the_tar(tmp_path, field, value, message):
    sample = _samples()[0]
    meta = json.loads(sample.meta.to_json()) | {field: value}
    tar = tmp_path / "000000.tar"
    with tarfile.open(tar, "w") as out:
        for name, data in (("k000.png", sample.image), ("k000.json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    manifest = _manifest((ShardEntry("000000.tar", 1),))
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    with pytest.raises(MiroError, match=re.escape(message)) as err:
        peek(open_shards(tmp_path), BatchSpec(rewards=REWARDS, batch_size=1))
    assert "'k000' of " in str(err.value) and str(tar) in str(err.value)


def test_the_writer_refuses_names_that_are_not_plain_members(tmp_path: Path) -> None:
    sample = _samples()[0]
    with ShardWriter(tmp_path, shard_size=4) as sink:
        with pytest.raises(MiroError, match="unsafe sample key"):
            sink.write(replace(sample, meta=replace(sample.meta, key="../evil")))
        with pytest.raises(MiroError, match="image extension 'exe'"):
            sink.write(replace(sample, image_ext="exe"))
        sink.write(sample)
        with pytest.raises(ValueError, match="the shards this writer wrote"):
            sink.finish(_manifest(()))
    assert not (tmp_path / "manifest.json").exists()


def test_reading_shards_needs_no_duckdb() -> None:
    """miro_train reads shards, never the database: the format module must not pull DuckDB in."""
    probe = "import sys, miro_data.trainshards; print('duckdb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], check=True)  # fmt: skip
    assert result.stdout.strip() == "False"
