"""Images by (shard, key), read by random access from the source shards, with a thumbnail cache.

No path is ever built from a request: a shard is looked up by name in a table made at start
from the shards folder (`miro_data.shards.list_shards`) and kept only for names the database
lists, and a key is looked up in that tar's member index (wids' mmap index, the reader
`miro data reshard` uses). A name that is not in a table is "not found", whatever it contains.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

from PIL import Image
from wids.wids_mmtar import MMIndexedTar

from miro_data.shards import IMAGE_EXTS, list_shards
from miro_serve.config import NotFound

log = logging.getLogger(__name__)

MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png",
               "webp": "image/webp", "gif": "image/gif"}  # fmt: skip
MAX_OPEN_TARS = 64  # mmap'ed tars kept open; the least recently used is closed beyond this


class ShardImages:
    """Random access to the images of the database's shards; thread-safe."""

    def __init__(
        self, shards: str | None, allowed: Iterable[str], cache_bytes: int = 64 << 20
    ) -> None:
        allowed = set(allowed)
        found = {s.name: s.path for s in list_shards(shards)} if shards else {}
        self.paths = {name: path for name, path in found.items() if name in allowed}
        self.missing = len(allowed - set(self.paths)) if shards else len(allowed)
        if shards and self.missing:
            log.warning("%d shards of the database are not under %s", self.missing, shards)
        self.cache_bytes = cache_bytes
        self._tars: OrderedDict[str, MMIndexedTar] = OrderedDict()
        self._thumbs: OrderedDict[tuple[str, str, int], tuple[bytes, str]] = OrderedDict()
        self._thumb_bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def close(self) -> None:
        with self._lock:
            for tar in self._tars.values():
                tar.close()
            self._tars.clear()

    def _tar(self, shard: str) -> MMIndexedTar:
        """The shard's open index (caller holds the lock)."""
        tar = self._tars.get(shard)
        if tar is not None:
            self._tars.move_to_end(shard)
            return tar
        path = self.paths.get(shard)
        if path is None:
            raise NotFound(f"no shard named {shard!r} in this database's shards")
        try:
            tar = MMIndexedTar(str(path), verbose=False)
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise NotFound(f"shard {shard!r} cannot be read: {err}") from None
        self._tars[shard] = tar
        while len(self._tars) > MAX_OPEN_TARS:
            self._tars.popitem(last=False)[1].close()
        return tar

    def original(self, shard: str, key: str) -> tuple[bytes, str]:
        """The image's stored bytes and extension."""
        with self._lock:
            tar = self._tar(shard)
            for ext in IMAGE_EXTS:
                offset = tar.by_name.get(f"{key}.{ext}")
                if offset is not None:
                    _, data = tar.get_at_offset(offset)
                    return bytes(data), ext
        raise NotFound(f"no image with key {key!r} in shard {shard!r}")

    def full(self, shard: str, key: str) -> tuple[bytes, str]:
        """(bytes, media type) a browser shows: stored bytes, or PNG for other formats."""
        data, ext = self.original(shard, key)
        if ext in MEDIA_TYPES:
            return data, MEDIA_TYPES[ext]
        return _encode(_open(data, shard, key), "PNG"), "image/png"

    def thumbnail(self, shard: str, key: str, side: int) -> tuple[bytes, str]:
        """The image fitted in side × side (stored bytes when already that small), cached."""
        ident = (shard, key, side)
        with self._lock:
            hit = self._thumbs.get(ident)
            if hit is not None:
                self._thumbs.move_to_end(ident)
                self.hits += 1
                return hit
        data, ext = self.original(shard, key)
        try:
            thumb = _thumbnail(data, ext, side)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise NotFound(f"the image of {shard}/{key} does not decode: {err}") from None
        self._remember(ident, thumb)
        return thumb

    def _remember(self, ident: tuple[str, str, int], thumb: tuple[bytes, str]) -> None:
        with self._lock:
            self.misses += 1
            if ident in self._thumbs:
                return
            self._thumbs[ident] = thumb
            self._thumb_bytes += len(thumb[0])
            while self._thumb_bytes > self.cache_bytes and self._thumbs:
                self._thumb_bytes -= len(self._thumbs.popitem(last=False)[1][0])


def _open(data: bytes, shard: str, key: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise NotFound(f"the image of {shard}/{key} does not decode: {err}") from None


def _thumbnail(data: bytes, ext: str, side: int) -> tuple[bytes, str]:
    source = Image.open(io.BytesIO(data))
    if max(source.size) <= side and ext in MEDIA_TYPES:
        source.verify()  # a damaged small image is an error here too, not a broken <img>
        return data, MEDIA_TYPES[ext]
    source.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
    image = source.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return _encode(image, "JPEG"), "image/jpeg"


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=85)
    else:
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buf, format=fmt)
    return buf.getvalue()
