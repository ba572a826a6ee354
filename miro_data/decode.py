"""Decode image bytes once into an (H, W, 3) uint8 RGB array, or say precisely why not.

Every mode PIL opens is normalised to 8-bit RGB: palette and alpha images are composited
over white, 16-bit images are scaled (not clipped) to 8 bits, CMYK and YCbCr are converted.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb threshold


class DecodeError(Exception):
    """The bytes are not a usable image; the message is the reason recorded in `failures`."""


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB array; raises DecodeError with a short reason."""
    if not data:
        raise DecodeError("empty image bytes")
    with warnings.catch_warnings():
        # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise DecodeError(
                    f"decompression bomb: {img.width}x{img.height} exceeds {max_pixels:,} pixels"
                )
            if img.width == 0 or img.height == 0:
                raise DecodeError("zero-size image")
            img.load()
            return _to_rgb(img)
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DecodeError(f"decompression bomb: {err}") from None
        except UnidentifiedImageError:
            raise DecodeError("not an image (unidentified format)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise DecodeError(f"corrupt image: {err}") from None
