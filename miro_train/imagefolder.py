"""A folder of generated images: `images/NNNNNN.png` and `manifest.jsonl`, one JSON row per
image with its `file` (relative to the manifest) and `prompt`, then how it was drawn.

`miro sample` and `miro eval geneval` write it with `write_manifest`; `miro eval` and
`miro report` read it with `read_manifest` / `read_rows`, so images from any model can be
scored as long as its manifest has `prompt` and `file`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from miro_data.common import MiroError, atomic_path, dumps_json
from miro_data.decode import DecodeError, decode_image

MANIFEST = "manifest.jsonl"


def write_manifest(
    out: Path, prompts: Sequence[str], images: np.ndarray, extra: Sequence[Mapping[str, Any]]
) -> Path:
    """A PNG per image under out/images/ and out/manifest.jsonl, each written then renamed;
    the manifest goes last, so a folder with a manifest has all its images."""
    rows = []
    for i, (prompt, image, more) in enumerate(zip(prompts, images, extra, strict=True)):
        name = f"images/{i:06d}.png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        rows.append({"file": name, "prompt": prompt, **more})
    manifest = out / MANIFEST
    with atomic_path(manifest) as tmp:
        tmp.write_text("".join(dumps_json(r) + "\n" for r in rows))
    return manifest


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL manifest, each an object with a text `prompt` and `file`."""
    return [row for _, row in _numbered_rows(path)]


def read_manifest(path: Path) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Rows of a JSONL manifest and their images (`file` is relative to the manifest)."""
    rows, images = [], []
    for n, row in _numbered_rows(path):
        file = path.parent / row["file"]
        try:
            images.append(decode_image(file.read_bytes()))
        except (OSError, DecodeError) as err:
            raise MiroError(f"{path}:{n}: cannot read image {file}: {err}") from None
        rows.append(row)
    return rows, images


def _numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of each non-empty line; anything else is one line naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MiroError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MiroError(f"cannot read manifest {path}: {err}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("prompt"), str)
            and isinstance(row.get("file"), str)
        ):
            raise MiroError(f"{path}:{n}: expected a JSON object with 'prompt' and 'file'")
        rows.append((n, row))
    if not rows:
        raise MiroError(f"manifest {path} is empty")
    return rows
