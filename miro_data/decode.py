"""Decode image bytes once into an (H, W, 3) uint8 RGB array, or say precisely why not.

One decoder for every stage: annotate scores what it returns and the trainer trains on what
it returns for the same bytes (miro_train.data), so the scored image is the trained image.
Every mode PIL opens is normalised to 8-bit RGB: palette and alpha images are composited
over white, 16-bit images are scaled (not clipped) to 8 bits, CMYK and YCbCr are converted.

Decoding has a pixel budget: the size in the header is checked before any pixel is decoded
(a 258 KB PNG can claim 9400×9400 pixels, and scoring that takes gigabytes). A JPEG over the
budget is decoded at 1/2, 1/4 or 1/8 scale by its DCT (`Image.draft`) when that fits; any
other image over the budget is a decode failure.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# Scoring costs ~80 bytes per pixel with the weight-free rewards (float64 temporaries):
# 4096×4096 pixels stay near 1.3 GB per worker, 9400×9400 took 7 GB.
DEFAULT_MAX_PIXELS = 4096 * 4096
PIL_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # the largest budget allowed


class DecodeError(Exception):
    """The bytes are not a usable image; the message is the reason recorded in `failures`."""


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        gray = np.clip(np.rint(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _fit_budget(img: Image.Image, max_pixels: int) -> None:
    """Refuse an image whose header claims more than `max_pixels` (a JPEG may shrink to fit)."""
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DecodeError("zero-size image")
    if w * h <= max_pixels:
        return
    if img.format in ("JPEG", "MPO"):  # MPO: a JPEG with extra frames
        for scale in (2, 4, 8):
            size = (-(-w // scale), -(-h // scale))
            if size[0] * size[1] <= max_pixels:
                img.draft(img.mode, size)
                if img.width * img.height <= max_pixels:
                    return
                break
    raise DecodeError(
        f"too many pixels: {w}x{h} is over the budget of {max_pixels:,} (see --max-pixels)"
    )


def decode_image(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB array; raises DecodeError with a short reason."""
    if not data:
        raise DecodeError("empty image bytes")
    with warnings.catch_warnings():
        # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            _fit_budget(img, max_pixels)
            img.load()
            return _to_rgb(img)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DecodeError(f"decompression bomb: {err}") from None
        except UnidentifiedImageError:
            raise DecodeError("not an image (unidentified format)") from None
        except MemoryError:
            raise DecodeError("out of memory while decoding") from None
        except Exception as err:  # any failure on these bytes is the sample's
            raise DecodeError(f"corrupt image: {type(err).__name__}: {err}"[:300]) from None
