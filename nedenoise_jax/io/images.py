"""Image files: one reader and one writer for the whole package.

:func:`read_image` returns a file's pixels as stored (its own dtype, ``(H, W)``
or ``(H, W, C)``); :func:`as_float` and :func:`read_float_image` give the
float32 ``(H, W, C)`` view training and evaluation use (integers divided by
their range, alpha dropped). TIFF files are read and written with tifffile
(any dtype, planar or interleaved), the other formats with Pillow.
:func:`write_image` writes atomically (:func:`nedenoise_jax.files.atomic_path`).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from nedenoise_jax import files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}


class ImageError(ValueError):
  """An image cannot be read, written or used (the file and the reason are in the message)."""


def _read_tiff(path: str, first_page: bool) -> Optional[np.ndarray]:
  """A TIFF's pixels by tifffile (any dtype, planar or not), or None where Pillow reads it better:
  palette images, and compressions whose codec tifffile lacks (LZW, JPEG without imagecodecs)."""
  import tifffile

  try:
    with tifffile.TiffFile(path) as tf:
      if tf.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE:
        return None
      return tf.pages[0].asarray() if first_page else tf.asarray()
  except (ValueError, NotImplementedError, KeyError, ImportError, RuntimeError):
    return None


def read_image(path: str, *, first_page: bool = False) -> np.ndarray:
  """An image file as stored: ``(H, W)`` or ``(H, W, C)``, its own dtype.

  Palette images become RGB (RGBA with transparency), bilevel ones L, CMYK
  RGB; 16-bit PNGs are uint16. A TIFF is read whole (a multi-page stack is an
  error), or only its first page with ``first_page``; TIFFs tifffile cannot
  decode (palette, or LZW/JPEG without ``imagecodecs``) are read by Pillow. Raises :class:`ImageError` naming the file when
  it is missing, unreadable, empty, not 2-D or holds NaN or Inf.
  """
  ext = os.path.splitext(path)[1].lower()
  try:
    arr = _read_tiff(path, first_page) if ext in (".tif", ".tiff") and os.path.isfile(path) else None
    if arr is None:
      from PIL import Image

      with Image.open(path) as im:
        im.load()
        if im.mode in ("P", "PA"):
          im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
        elif im.mode == "1":
          im = im.convert("L")
        elif im.mode == "CMYK":
          im = im.convert("RGB")
        elif im.mode == "La":
          im = im.convert("LA")
        arr = np.asarray(im)
        if im.mode.startswith("I;16"):
          arr = arr.astype(np.uint16)
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except Exception as e:  # truncated, corrupt or not an image
    raise ImageError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
  if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
    arr = np.moveaxis(arr, 0, -1)  # planar TIFF
  if arr.ndim not in (2, 3):
    raise ImageError(f"{path}: expected a 2-D image with channels, got shape {arr.shape}")
  if arr.size == 0:
    raise ImageError(f"{path}: empty image (shape {arr.shape})")
  if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
    raise ImageError(f"{path}: contains NaN or Inf pixels")
  return arr


def as_float(arr: np.ndarray) -> np.ndarray:
  """float32 ``(H, W, C)``, C in {1, 3}: integers scaled to [0, 1], floats as they are, alpha dropped.

  8-bit pixels are divided by 255 and 16-bit ones by 65535; 32-bit integer
  (Pillow's ``I``) images by 65535 when their maximum exceeds 255, else by 255.
  """
  a = np.asarray(arr)
  if a.ndim == 2:
    a = a[:, :, None]
  if a.shape[-1] == 2:  # gray + alpha
    a = a[..., :1]
  elif a.shape[-1] == 4:  # RGBA
    a = a[..., :3]
  if a.dtype == np.bool_:
    return a.astype(np.float32)
  if a.dtype == np.uint8:
    return a.astype(np.float32) / 255.0
  if a.dtype == np.uint16:
    return a.astype(np.float32) / 65535.0
  if np.issubdtype(a.dtype, np.integer):
    return a.astype(np.float32) / (65535.0 if a.max(initial=0) > 255 else 255.0)
  return a.astype(np.float32)


def read_float_image(path: str) -> np.ndarray:
  """:func:`read_image` (a TIFF's first page) then :func:`as_float`: float32 ``(H, W, C)``."""
  return as_float(read_image(path, first_page=True))


def write_image(path: str, arr: np.ndarray) -> None:
  """Writes ``arr`` (``(H, W)`` or ``(H, W, C)``) atomically, in the format of ``path``'s extension.

  TIFF takes every dtype; PNG, JPEG (quality 95) and BMP take uint8 (PNG
  also uint16). Raises :class:`ImageError` naming the file otherwise.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in IMAGE_EXTENSIONS:
    raise ImageError(f"{path}: unknown image format {ext!r}; expected one of {', '.join(IMAGE_EXTENSIONS)}")
  if ext not in (".tif", ".tiff") and arr.dtype not in (np.uint8, np.uint16):
    raise ImageError(f"{path}: {ext} cannot store {arr.dtype} pixels; use .tif")
  with files.atomic_path(path) as tmp:
    if ext in (".tif", ".tiff"):
      import tifffile

      tifffile.imwrite(tmp, arr, photometric="rgb" if arr.ndim == 3 and arr.shape[-1] in (3, 4)
                       else "minisblack")
    else:
      from PIL import Image

      a = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
      fmt = _PIL_FORMATS[ext]
      Image.fromarray(a).save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def list_images(path: str) -> list[str]:
  """Image files (by extension) under the folder ``path``, recursively, sorted.

  Hidden files and folders (``.name``, e.g. the temporary files of an
  unfinished atomic write) are skipped.
  """
  found = []
  for d, dirs, fs in os.walk(path):
    dirs[:] = [x for x in dirs if not x.startswith(".")]
    found += [os.path.join(d, f) for f in fs if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
  return sorted(found)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
  """``(H, W, C)`` float image with ``channels`` channels: gray -> colour by repetition, colour -> gray
  with ITU-R BT.601 weights."""
  c = img.shape[-1]
  if c == channels:
    return img
  if c == 1 and channels == 3:
    return np.repeat(img, 3, axis=-1)
  if c == 3 and channels == 1:
    return (img @ np.asarray([0.299, 0.587, 0.114], np.float32))[:, :, None]
  raise ImageError(f"cannot convert an image with {c} channels to {channels}")


SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "deadleaves-sigma25.png")
"""A shipped 96x96 8-bit gray image (built-in dead leaves, seed [7, 1, 0]) with Gaussian noise of sigma 25:
something to denoise on a fresh install."""
