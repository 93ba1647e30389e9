"""ImageDecoder, through Pillow (an optional dependency: ``pip install jitort[image]``)."""

from __future__ import annotations

import io

import numpy as np

from .registry import op


@op("ImageDecoder", since=20)
def image_decoder(encoded_stream, *, pixel_format="RGB"):
    """Decode a uint8 byte stream to HWC uint8 (RGB/BGR) or HW1 (Grayscale); empty if undecodable."""
    try:
        import PIL.Image
    except ImportError:
        raise RuntimeError("ImageDecoder needs Pillow: pip install pillow (or jitort[image])") from None
    if pixel_format not in ("RGB", "BGR", "Grayscale"):
        raise ValueError(f"pixel_format must be RGB, BGR or Grayscale, got {pixel_format!r}")
    try:
        img = PIL.Image.open(io.BytesIO(np.ascontiguousarray(encoded_stream, np.uint8).tobytes()))
        img.load()
    except Exception:  # noqa: BLE001 - the spec asks for an empty result on undecodable input
        return np.zeros((0, 0, 1 if pixel_format == "Grayscale" else 3), np.uint8)
    if pixel_format == "Grayscale":
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None]
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1]) if pixel_format == "BGR" else rgb
