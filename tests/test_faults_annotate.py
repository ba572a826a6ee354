"""Annotate under hostile input: bad options, cut tars, malformed members, odd formats, huge images.

Every test writes real tars (tarfile / webdataset) and runs the real annotate; what it checks
is the data the run leaves: failure rows, ledger rows, n_read = n_scored + n_failed, and that
every other sample was scored.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest
import webdataset as wds
from PIL import Image, ImageFile
from typer.testing import CliRunner

from cli.main import app
from miro_data.annotate import AnnotateConfig, annotate
from miro_data.bins import BinsConfig, bins
from miro_data.common import MiroError
from miro_data.decode import DecodeError, decode_image
from miro_data.reshard import ReshardConfig, reshard
from miro_data.tarindex import member_index
from miro_data.trainshards import read_sample
from miro_train import data as train_data

REWARDS = ("sharpness", "contrast")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _picture(seed: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar with exactly these members, names as given (GNU format keeps raw name bytes)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _rows(db: Path, sql: str, *params) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def _check_ledger(db: Path, shards: set[str]) -> None:
    """Each shard is done for every reward, and its counts add up."""
    ledger = _rows(db, "SELECT shard, reward, n_read, n_scored, n_failed FROM ledger")
    assert {(s, r) for s, r, *_ in ledger} == {(s, r) for s in shards for r in REWARDS}
    for shard, _, n_read, n_scored, n_failed in ledger:
        ((read, distinct),) = _rows(
            db,
            "SELECT count(*), count(DISTINCT key) FROM samples WHERE shard = ? AND status IN ('ok', 'undecodable')",
            shard,
        )
        assert n_read == read == distinct == n_scored + n_failed


# ----------------------------------------------------------------------------
# 1. Options are checked at the edge: one line, exit 2, nothing written
# ----------------------------------------------------------------------------

BAD_OPTIONS = [
    (("--batch-size", "0"), "--batch-size must be 1 or more"),
    (("--batch-size", "-4"), "--batch-size must be 1 or more"),
    (("--workers", "0"), "--workers must be 1 or more"),
    (("--workers", "-2"), "--workers must be 1 or more"),
    (("--decode-workers", "-1"), "--decode-workers must be 0 or more"),
    (("--device", "tpu"), "--device 'tpu'"),
    (("--device", "cuda:x"), "--device 'cuda:x'"),
    (("--device", "cuda:-1"), "--device 'cuda:-1'"),
    (("--max-pixels", "0"), "--max-pixels must be 1 or more"),
    (("--max-pixels", "100000000000"), "--max-pixels must be at most"),
    (("-r", "nosuch"), "unknown reward 'nosuch'"),
    (("-r", "sharpness,sharpness"), "named twice"),
    (("-r", " , "), "no rewards given"),
    (("-r", "sharpness:"), "unknown reward 'sharpness:'"),
]


@pytest.mark.parametrize(("options", "fragment"), BAD_OPTIONS)
def test_bad_annotate_options_are_one_line_and_exit_2(
    tmp_path: Path, options: tuple[str, ...], fragment: str
) -> None:
    _tar(tmp_path / "s.tar", [("a.png", _encode(_picture(0), "PNG"))])
    db = tmp_path / "a.duckdb"
    args = ["data", "annotate", str(tmp_path / "s.tar"), str(db), "-r", "sharpness", *options]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0] and "Traceback" not in result.output
    assert not db.exists()  # refused before anything was written


def test_a_config_that_would_read_nothing_cannot_be_built(tmp_path: Path) -> None:
    with pytest.raises(MiroError, match="batch-size"):
        AnnotateConfig(
            shards=str(tmp_path), db=tmp_path / "d.duckdb", rewards=REWARDS, batch_size=0
        )


# ----------------------------------------------------------------------------
# 2. A shard is done only when read to its end; a repaired shard is read in full
# ----------------------------------------------------------------------------


def _good_tar(n: int) -> bytes:
    buf = io.BytesIO()
    with wds.TarWriter(buf) as sink:
        for i in range(n):
            sink.write(
                {"__key__": f"k{i:03d}", "png": _encode(_picture(i), "PNG"), "txt": f"c {i}"}
            )
    return buf.getvalue()


@pytest.mark.parametrize("retry", [False, True], ids=["rerun", "retry-failed"])
def test_a_cut_shard_stays_retryable_and_is_scored_in_full_once_repaired(
    tmp_path: Path, retry: bool
) -> None:
    full, shards, db = _good_tar(60), tmp_path / "shards", tmp_path / "c.duckdb"
    shards.mkdir()
    (shards / "cut.tar").write_bytes(full[: len(full) // 2 + 700])  # cut inside a member
    (shards / "garbage.tar").write_bytes(b"this is not a tar file at all\n" * 40)
    cfg = AnnotateConfig(shards=str(shards), db=db, rewards=REWARDS)
    for _ in range(2):  # a rerun of the still-cut shard reads it again, duplicating nothing
        assert annotate(cfg).unreadable == ("cut", "garbage")
        assert _rows(db, "SELECT count(*) FROM ledger") == [(0,)]
        reads = _rows(db, "SELECT shard FROM failures WHERE stage = 'read' ORDER BY 1")
        assert reads == [("cut",), ("garbage",)]
        ((n, distinct),) = _rows(db, "SELECT count(*), count(DISTINCT (reward, key)) FROM scores")
        assert n == distinct == 2 * _rows(db, "SELECT count(*) FROM samples")[0][0]
        assert 0 < n < 2 * 60
    (shards / "cut.tar").write_bytes(full)  # repaired
    (shards / "garbage.tar").unlink()
    annotate(AnnotateConfig(shards=str(shards), db=db, rewards=REWARDS, retry_failed=retry))
    assert _rows(db, "SELECT reward, count(DISTINCT key) FROM scores GROUP BY 1 ORDER BY 1") == [
        ("contrast", 60),
        ("sharpness", 60),
    ]
    assert _rows(db, "SELECT count(*) FROM failures WHERE shard = 'cut'") == [(0,)]
    _check_ledger(db, {"cut"})


def test_a_cut_found_while_adding_a_reward_loses_nothing_already_scored(tmp_path: Path) -> None:
    full, shard, db = _good_tar(40), tmp_path / "s.tar", tmp_path / "add.duckdb"
    shard.write_bytes(full)
    annotate(AnnotateConfig(shards=str(shard), db=db, rewards=("sharpness",)))
    done_before = _rows(db, "SELECT * FROM ledger")
    shard.write_bytes(full[: len(full) // 3])
    annotate(AnnotateConfig(shards=str(shard), db=db, rewards=REWARDS))
    assert _rows(db, "SELECT * FROM ledger") == done_before  # contrast is not done
    assert _rows(db, "SELECT count(*) FROM samples") == [(40,)]
    assert _rows(db, "SELECT count(*) FROM scores WHERE reward = 'sharpness'") == [(40,)]
    assert 0 < _rows(db, "SELECT count(*) FROM scores WHERE reward = 'contrast'")[0][0] < 40
    shard.write_bytes(full)
    annotate(AnnotateConfig(shards=str(shard), db=db, rewards=REWARDS))
    _check_ledger(db, {"s"})
    assert _rows(db, "SELECT count(*) FROM scores") == [(80,)]


# ----------------------------------------------------------------------------
# 3. A malformed member fails its sample, never the run
# ----------------------------------------------------------------------------

# key → (members besides the image, a fragment of the failure reason)
MALFORMED: dict[str, tuple[dict[str, bytes], str]] = {
    "json_null": ({"json": b"null"}, "it is null, not an object"),
    "json_list": ({"json": b"[1, 2]"}, "it is an array, not an object"),
    "url_list": ({"json": b'{"url": ["a", "b"]}', "txt": b"cap"}, "'url' is an array"),
    "url_object": ({"json": b'{"url": {"a": 1}}'}, "'url' is an object"),
    "caption_number": ({"json": b'{"caption": 7}'}, "'caption' is a number"),
    "json_broken": ({"json": b'{"url": '}, "malformed json"),
    "json_nan": ({"json": b'{"x": NaN}'}, "NaN is not JSON"),
    "json_inf": ({"json": b'{"x": 1e999}'}, "malformed json"),
    "json_surrogate": ({"json": b'{"x": "\\ud800"}'}, "malformed json"),
    "json_latin1": ({"json": b'{"x": "caf\xe9"}'}, "malformed json"),
    "json_deep": ({"json": b"[" * 100_000 + b"]" * 100_000}, "malformed json"),
    "txt_latin1": ({"txt": b"caf\xe9 au lait"}, "not valid UTF-8"),
}


def _malformed_shards(root: Path) -> dict[str, str]:
    """Two shards mixing good samples with malformed ones; returns {failed key: reason fragment}."""
    png = _encode(_picture(99), "PNG")
    a: list[tuple[str, bytes]] = []
    for i, (key, (members, _)) in enumerate(MALFORMED.items()):
        a += [(f"good{i:02d}.png", _encode(_picture(i), "PNG")), (f"good{i:02d}.txt", b"ok")]
        a += [(f"{key}.png", png)] + [(f"{key}.{ext}", data) for ext, data in members.items()]
    other = _encode(_picture(98), "PNG")
    a += [("twice.png", png), ("twice.txt", b"first"), ("good90.png", png), ("twice.png", other)]
    a += [("again.png", png), ("again.txt", b"x"), ("again.png", png)]  # a member repeated
    a += [("k\udcff.png", png), ("no_image.txt", b"text only"), ("not_png.png", b"<html>")]
    b = [(f"b{i:02d}.{ext}", data) for i in range(6) for ext, data in (("png", png), ("txt", b"b"))]
    b[4:4] = [("b_bad.jpg", _encode(_picture(5), "JPEG")), ("b_bad.json", b"null")]
    _tar(root / "a.tar", a)
    _tar(root / "b.tar", b)
    failed = {key: fragment for key, (_, fragment) in MALFORMED.items()}
    failed |= {
        "twice.dup2": "duplicate key", "again.dup2": "duplicate key",
        "k\\xff": "key is not valid UTF-8",
        "no_image": "no image file", "not_png": "not an image", "b_bad": "it is null",
    }  # fmt: skip
    return failed


@pytest.mark.parametrize("workers", [1, 2])
def test_malformed_members_are_failure_rows_and_every_other_sample_is_scored(
    tmp_path: Path, workers: int
) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    failed = _malformed_shards(shards)
    db = tmp_path / "m.duckdb"
    annotate(AnnotateConfig(shards=str(shards), db=db, rewards=REWARDS, workers=workers))
    status = dict(_rows(db, "SELECT key, status FROM samples"))
    reasons = dict(_rows(db, "SELECT key, reason FROM failures WHERE stage = 'decode'"))
    for key, fragment in failed.items():
        assert status[key] == "undecodable", key
        assert fragment in reasons[key], (key, reasons[key])
    good = {k for k, s in status.items() if s == "ok"}
    # the first sample under a repeated key is the key's, here and in reshard's random access
    assert good == set(status) - set(failed) and len(good) == len(MALFORMED) + 3 + 6
    assert {"twice", "again"} <= good
    assert _member(shards / "a.tar", "twice.png") == _encode(_picture(99), "PNG")
    for reward in REWARDS:
        scored = _rows(db, "SELECT key FROM scores WHERE reward = ? AND value IS NOT NULL", reward)
        assert {k for (k,) in scored} == good
    assert _rows(db, "SELECT count(*) FROM failures WHERE stage = 'read'") == [(0,)]
    _check_ledger(db, {"a", "b"})


# ----------------------------------------------------------------------------
# 4 + 5. Every format annotate accepts reaches the trainer, decoded to the pixels scored
# ----------------------------------------------------------------------------


def _format_samples() -> dict[str, tuple[str, bytes]]:
    rgb = _picture(3, 32)
    alpha = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    la = rgb.convert("L")
    la.putalpha(alpha)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    sixteen = Image.fromarray((np.arange(1024).reshape(32, 32) * 64).astype(np.uint16))
    return {
        "rgb_png": ("png", _encode(rgb, "PNG")),
        "grey_png": ("png", _encode(rgb.convert("L"), "PNG")),
        "grey_jpg": ("jpg", _encode(rgb.convert("L"), "JPEG")),
        "rgb_jpeg": ("jpeg", _encode(rgb, "JPEG")),
        "cmyk_jpg": ("jpg", _encode(rgb.convert("CMYK"), "JPEG")),
        "sixteen_png": ("png", _encode(sixteen, "PNG")),
        "rgba_png": ("png", _encode(rgba, "PNG")),
        "la_png": ("png", _encode(la, "PNG")),
        "palette_trns_png": ("png", _encode(palette, "PNG", transparency=0)),
        "gif": ("gif", _encode(palette, "GIF", transparency=0)),
        "bmp": ("bmp", _encode(rgb, "BMP")),
        "tif": ("tif", _encode(rgba, "TIFF")),
        "webp": ("webp", _encode(rgb, "WEBP", lossless=True)),
        "upper_case_ext": ("PNG", _encode(la, "PNG")),
        "big_jpg": ("jpg", _encode(_picture(4, 256).resize((256, 256)), "JPEG")),
    }


def test_every_accepted_format_trains_on_exactly_the_pixels_that_were_scored(
    tmp_path: Path,
) -> None:
    samples = _format_samples()
    _tar(
        tmp_path / "f.tar",
        [m for key, (ext, data) in samples.items() for m in ((f"{key}.{ext}", data), (f"{key}.txt", b"a photo"))],
    )  # fmt: skip
    db, out, budget = tmp_path / "f.duckdb", tmp_path / "train", 5_000
    annotate(
        AnnotateConfig(shards=str(tmp_path / "f.tar"), db=db, rewards=REWARDS, max_pixels=budget)
    )
    assert _rows(db, "SELECT count(*) FROM samples WHERE status = 'ok'") == [(len(samples),)]
    bins(BinsConfig(db=db, n_bins=4))
    reshard(ReshardConfig(shards=str(tmp_path / "f.tar"), db=db, out=out))
    spec = train_data.BatchSpec(rewards=REWARDS, batch_size=1, resolution=32)
    seen = set()
    for raw in train_data._samples_of(list(train_data.open_shards(out).urls)):
        key = raw["__key__"]
        scored = decode_image(samples[key][1], budget)  # what annotate scored
        ext = samples[key][0].lower()
        meta = read_sample(raw).meta
        assert np.array_equal(decode_image(raw[ext], train_data.scored_pixels(meta)), scored), key
        trained = train_data.decode(raw, spec)["image"]
        if scored.shape[:2] == (32, 32):
            assert np.array_equal(trained, scored), key
        seen.add(key)
    assert seen == set(samples)
    assert decode_image(samples["big_jpg"][1], budget).shape == (64, 64, 3)  # drafted at 1/4
    assert 120 < decode_image(samples["sixteen_png"][1]).mean() < 136  # scaled, not clipped
    white = decode_image(samples["rgba_png"][1])[:, 0]  # alpha 0 in the first column
    assert (white == 255).all()


# ----------------------------------------------------------------------------
# 6. Decoding has a pixel budget, checked on the header before any pixel is decoded
# ----------------------------------------------------------------------------


def _constant_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size that compresses to almost nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 100) for _ in range(height // 100))
    idat += packer.compress(row * (height % 100)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_huge_small_file_is_refused_from_its_header(monkeypatch) -> None:
    huge = _constant_png(9400, 9400)
    assert len(huge) < 300_000

    def no_pixels(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)
    with pytest.raises(DecodeError, match="too many pixels: 9400x9400"):
        decode_image(huge)  # the default budget


def test_images_over_the_budget_are_failure_rows_and_jpegs_shrink_to_fit(tmp_path: Path) -> None:
    huge, medium = _constant_png(9400, 9400), _constant_png(300, 300)
    photo = _encode(_picture(7, 400), "JPEG")
    for name in ("a", "b"):  # two workers, each meeting a huge image
        members = [(f"{name}{i}.png", _encode(_picture(i), "PNG")) for i in range(5)]
        members += [(f"{name}_huge.png", huge), (f"{name}_medium.png", medium)]
        members += [(f"{name}_photo.jpg", photo)]
        _tar(tmp_path / f"{name}.tar", members)
    db = tmp_path / "big.duckdb"
    cfg = AnnotateConfig(shards=str(tmp_path), db=db, rewards=REWARDS, workers=2, max_pixels=50_000)
    annotate(cfg)
    failed = dict(_rows(db, "SELECT key, reason FROM failures"))
    assert set(failed) == {"a_huge", "a_medium", "b_huge", "b_medium"}
    assert all("too many pixels" in reason for reason in failed.values())
    sizes = dict(_rows(db, "SELECT key, [width, height] FROM samples WHERE status = 'ok'"))
    assert len(sizes) == 12 and sizes["a_photo"] == sizes["b_photo"] == [200, 200]
    _check_ledger(db, {"a", "b"})


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_random_access_reads_long_names_and_the_first_of_a_repeated_name(
    tmp_path: Path, fmt: int
) -> None:
    long_key = "k" * 150  # past ustar's 100 bytes: a GNU long-name or PAX header carries it
    first, second = _encode(_picture(1), "PNG"), _encode(_picture(2), "PNG")
    with tarfile.open(tmp_path / "s.tar", "w", format=fmt) as tar:
        for name, data in [(f"{long_key}.png", first), ("a.png", first), ("a.png", second)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _member(tmp_path / "s.tar", f"{long_key}.png") == first
    assert _member(tmp_path / "s.tar", "a.png") == first
    assert _member(tmp_path / "s.tar", "nosuch.png") is None


def _member(tar: Path, name: str) -> bytes | None:
    """A member's bytes as reshard reads them: by the offset its member index gives."""
    with open(tar, "rb") as f:
        index = {n: (offset, size) for n, offset, size in member_index(f)}
        if name not in index:
            return None
        f.seek(index[name][0])
        return f.read(index[name][1])
