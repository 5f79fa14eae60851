"""Image files: one reader and one writer for the whole package.

:func:`read_image` returns a file's pixels as stored (its own dtype, ``(H, W)``
or ``(H, W, C)``); :func:`as_float` and :func:`read_float_image` give the
float32 ``(H, W, C)`` view training and evaluation use (integers divided by
their range, alpha dropped). TIFF files are read and written with tifffile
(any dtype, planar or interleaved), the other formats with Pillow.
:func:`read_stack` and :func:`write_stack` keep a TIFF stack's structure (axes,
pages, dtype, ImageJ/OME metadata, resolution). Every reader refuses files
claiming more than :data:`MAX_PIXELS` pixels before decoding them; every
writer is atomic (:func:`nedenoise_jax.files.atomic_open`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from typing import Optional

import numpy as np

from nedenoise_jax import files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}

MAX_PIXELS = 178_956_970
"""The most pixels per image (per plane of a stack) a reader decodes by default: Pillow's
decompression-bomb limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``), for every format. A file
claiming more is refused from its header, before anything is allocated; pass ``max_pixels``
(``None``: no limit) or ``--max_pixels`` to read larger ones."""

MAX_STACK_PIXELS = 1 << 30
"""The most pixels over all planes of a stack read by default (1,073,741,824: a 2048 x 2048
stack of 256 planes; 4 GiB as float32); ``max_stack_pixels`` / ``--max_stack_pixels``."""

PLANE_AXES = "YXS"  # tifffile's letters of a plane: rows, columns, samples (photometric RGB's colour)
_pil_lock = threading.Lock()


class ImageError(ValueError):
  """An image cannot be read, written or used (the file and the reason are in the message)."""


def extension(path: str) -> str:
  """The known image extension ``path``'s file name ends with (lower case; ``".png"`` for
  ``".png"`` and ``"..png"`` alike, which :func:`os.path.splitext` takes for extensionless
  hidden names), or ``""``."""
  name = os.path.basename(os.fspath(path)).lower()
  return next((e for e in IMAGE_EXTENSIONS if name.endswith(e)), "")


def is_tiff(path: str) -> bool:
  return extension(path) in (".tif", ".tiff")


def check_real(arr: np.ndarray, what: str) -> None:
  """Raises :class:`ImageError` unless ``arr`` holds real numbers (integers, floats or booleans):
  complex, object, string and structured pixels have no meaning to a denoiser."""
  if arr.dtype.kind not in "biuf":
    raise ImageError(f"{what}: unsupported pixel type {arr.dtype}; expected real numbers "
                     "(unsigned or signed integers, floats or booleans)")


def _check_pixels(path: str, shape, axes: str, max_pixels: Optional[int],
                  max_stack_pixels: Optional[int] = None) -> None:
  """Refuses a claimed size above ``max_pixels`` per plane (or ``max_stack_pixels`` over all
  planes) before any pixel is decoded."""
  dims = " x ".join(f"{n} {a}" for n, a in zip(shape, axes))
  plane = math.prod(int(n) for n, a in zip(shape, axes) if a in "YX")  # exact: no overflow
  total = math.prod(int(n) for n, a in zip(shape, axes) if a != "S")
  for pixels, limit, what, flag in ((plane, max_pixels, "pixels", "max_pixels"),
                                    (total, max_stack_pixels, "pixels over all planes", "max_stack_pixels")):
    if limit is not None and pixels > limit:
      raise ImageError(f"{path}: claims {pixels:,} {what} ({dims}), more than the limit of "
                       f"{limit:,}; not read. Pass a larger {flag} (--{flag}) if the file is genuine")


def _tiff_layout(tf, first_page: bool, path: str) -> tuple[tuple, str]:
  """``(shape, axes)`` of what is read from an open TIFF: its first series, or its first page."""
  if first_page:
    page = tf.pages[0]
    return tuple(page.shape), page.axes
  if len(tf.series) > 1:  # e.g. pages of several sizes: reading one series would drop the others
    raise ImageError(f"{path}: holds {len(tf.series)} series of different shapes ("
                     + ", ".join(f"{s.shape} {s.axes}" for s in tf.series) + "); expected one image "
                     "or one stack")
  s = tf.series[0]
  if len(s.levels) > 1:  # its reduced levels could not be written back as they were
    raise ImageError(f"{path}: a pyramid of {len(s.levels)} resolution levels ("
                     + ", ".join(str(level.shape) for level in s.levels) + "); expected one image or "
                     "one stack (denoise its full-resolution level, tifffile.imread(path, level=0))")
  return tuple(s.shape), s.axes


def _is_stack(shape, axes: str) -> bool:
  return any(n > 1 for n, a in zip(shape, axes) if a not in PLANE_AXES)


def is_stack(path: str) -> bool:
  """Whether ``path`` is a TIFF whose first series has more than one plane (read from its header)."""
  if not is_tiff(path):
    return False
  import tifffile

  try:
    with tifffile.TiffFile(path) as tf:
      return _is_stack(*_tiff_layout(tf, False, path))
  except Exception:  # not a TIFF tifffile can parse, or several series: read_image reports it
    return False


def _read_tiff(path: str, first_page: bool, max_pixels: Optional[int]) -> Optional[np.ndarray]:
  """A 2-D TIFF's pixels by tifffile (any dtype; samples last), or None where Pillow reads it
  better: palette images, and compressions whose codec tifffile lacks (LZW, JPEG without
  imagecodecs). A stack is an error that points to :func:`read_stack`."""
  import tifffile

  try:
    tf = tifffile.TiffFile(path)
  except (ValueError, NotImplementedError, KeyError, ImportError, RuntimeError):
    return None
  with tf:
    if tf.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE:
      return None
    shape, axes = _tiff_layout(tf, first_page, path)
    _check_pixels(path, shape, axes, max_pixels)
    if _is_stack(shape, axes):
      raise ImageError(f"{path}: a stack of {len(tf.pages)} pages (shape {shape}, axes {axes}), not "
                       "one image; read it with read_stack and denoise it with denoise_stack (the "
                       "denoise command does both)")
    try:
      arr = (tf.pages[0] if first_page else tf.series[0]).asarray()
    except (ValueError, NotImplementedError, KeyError, ImportError, RuntimeError):
      return None
  keep = [a for a in axes if a in PLANE_AXES]
  arr = arr.reshape([n for n, a in zip(shape, axes) if a in PLANE_AXES])
  return np.moveaxis(arr, keep.index("S"), -1) if "S" in keep else arr


def _read_pil(path: str, max_pixels: Optional[int]) -> np.ndarray:
  import warnings

  from PIL import Image

  # Pillow refuses above 2 x its own global limit when opening; ours decides instead
  # (it is the same by default), so Pillow's check is lifted when ours is larger.
  # Pillow checks its own global limit when opening and again when loading some formats
  # (TIFF); ours decides instead (it is the same by default), so Pillow's is lifted, under a
  # lock, for the whole read when ours is larger.
  pil_limit = Image.MAX_IMAGE_PIXELS
  lift = pil_limit is not None and (max_pixels is None or max_pixels > 2 * pil_limit)
  # Pillow's own warnings (e.g. "Corrupt EXIF data") are held back: a file that fails to read
  # gets one clear error, and one that reads gets them once, with its name.
  with _pil_lock if lift else contextlib.nullcontext(), warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    if lift:
      Image.MAX_IMAGE_PIXELS = None
    try:
      with Image.open(path) as im:
        _check_pixels(path, (im.height, im.width), "YX", max_pixels)
        im.load()
        arr = _pil_array(im)
    except Image.DecompressionBombError as e:
      raise ImageError(f"{path}: {e}; not read. Pass a larger max_pixels (--max_pixels) if the "
                       "file is genuine") from None
    finally:
      if lift:
        Image.MAX_IMAGE_PIXELS = pil_limit
  for w in caught:
    warnings.warn(f"{path}: {w.message}", w.category, stacklevel=3)
  return arr


def _pil_array(im) -> np.ndarray:
  """A loaded Pillow image as an array: palette to RGB(A), bilevel to L, CMYK to RGB."""
  if im.mode in ("P", "PA"):
    im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
  elif im.mode == "1":
    im = im.convert("L")
  elif im.mode == "CMYK":
    im = im.convert("RGB")
  elif im.mode == "La":
    im = im.convert("LA")
  arr = np.asarray(im)
  return arr.astype(np.uint16) if im.mode.startswith("I;16") else arr


def _check_read(path: str, arr: np.ndarray) -> np.ndarray:
  check_real(arr, path)
  if arr.size == 0:
    raise ImageError(f"{path}: empty image (shape {arr.shape})")
  if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
    raise ImageError(f"{path}: contains NaN or Inf pixels")
  return arr


def read_image(path: str, *, first_page: bool = False, max_pixels: Optional[int] = MAX_PIXELS) -> np.ndarray:
  """An image file as stored: ``(H, W)`` or ``(H, W, C)``, its own dtype.

  Palette images become RGB (RGBA with transparency), bilevel ones L, CMYK
  RGB; 16-bit PNGs are uint16. A TIFF's channels are its samples (planar or
  interleaved); it is colour only when its metadata says so (photometric
  RGB), and a stack (pages along Z, T, C, ...) is an error pointing to
  :func:`read_stack`, unless ``first_page``. TIFFs tifffile cannot decode
  (palette, or LZW/JPEG without ``imagecodecs``) are read by Pillow. Raises
  :class:`ImageError` naming the file when it is missing, unreadable, empty,
  larger than ``max_pixels``, of complex or other non-real pixels, or holds
  NaN or Inf.
  """
  try:
    arr = _read_tiff(path, first_page, max_pixels) if is_tiff(path) and os.path.isfile(path) else None
    if arr is None:
      arr = _read_pil(path, max_pixels)
  except ImageError:
    raise
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except IsADirectoryError:
    raise ImageError(f"{path}: is a folder, not an image") from None
  except Exception as e:  # truncated, corrupt or not an image
    raise ImageError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
  if arr.ndim not in (2, 3):
    raise ImageError(f"{path}: expected a 2-D image with channels, got shape {arr.shape}")
  return _check_read(path, arr)


# --------------------------------------------------------------------------- stacks


@dataclasses.dataclass
class Stack:
  """A TIFF's first series: its pixels, their axes and what :func:`write_stack` carries back.

  ``axes``: one tifffile letter per axis of ``data`` (``Y``, ``X`` the plane,
  ``S`` the samples of a photometric RGB image, and any others, e.g. ``Z``,
  ``T``, ``C``, ``I`` for plain pages, the planes). ``metadata``: ``kind``
  (``imagej``, ``ome``, ``shaped`` or ``pages``), ``imagej`` (ImageJ's
  entries: spacing, unit, finterval, ranges, ...), ``ome`` (the physical sizes
  and channel names), ``resolution`` and ``resolutionunit``, ``compression``.
  Colour (photometric RGB) and the planar configuration follow from ``axes``:
  an ``S`` axis of 3 or 4 samples, before ``Y`` when planar.
  """

  data: np.ndarray
  axes: str
  metadata: dict = dataclasses.field(default_factory=dict)

  @property
  def planes(self) -> int:
    """How many 2-D images the stack holds."""
    return int(np.prod([n for n, a in zip(self.data.shape, self.axes) if a not in PLANE_AXES]))


# ImageJ entries that describe the layout: tifffile writes them again from the data and axes.
_IMAGEJ_LAYOUT = ("ImageJ", "images", "channels", "slices", "frames", "hyperstack", "axes")
_OME_KEYS = ("PhysicalSizeX", "PhysicalSizeXUnit", "PhysicalSizeY", "PhysicalSizeYUnit",
             "PhysicalSizeZ", "PhysicalSizeZUnit", "TimeIncrement", "TimeIncrementUnit")


def _ome_metadata(xml: str) -> dict:
  import tifffile

  try:
    image = tifffile.xml2dict(xml)["OME"]["Image"]
  except (KeyError, TypeError, ValueError):
    return {}
  pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
  out = {k: pixels[k] for k in _OME_KEYS if k in pixels}
  channels = pixels.get("Channel")
  channels = channels if isinstance(channels, list) else [channels] if channels else []
  names = [c.get("Name") for c in channels if isinstance(c, dict)]
  if names and all(isinstance(n, str) for n in names):
    out["Channel"] = {"Name": names}
  return out


def read_stack(path: str, *, max_pixels: Optional[int] = MAX_PIXELS,
               max_stack_pixels: Optional[int] = MAX_STACK_PIXELS) -> Stack:
  """A TIFF's first series with its axes and metadata (ImageJ hyperstacks, OME-TIFF, tifffile's
  shaped files, plain multi-page files): see :class:`Stack`.

  Raises :class:`ImageError` naming the file when it is not a readable TIFF,
  holds several series, claims more than ``max_pixels`` pixels per plane or
  ``max_stack_pixels`` over all planes, or holds complex, NaN or Inf pixels.
  """
  import tifffile

  if not is_tiff(path):
    raise ImageError(f"{path}: stacks are TIFF files (.tif, .tiff)")
  try:
    with tifffile.TiffFile(path) as tf:
      shape, axes = _tiff_layout(tf, False, path)
      series, page = tf.series[0], tf.pages[0]
      _check_pixels(path, shape, axes, max_pixels, max_stack_pixels)
      data = series.asarray()
      meta: dict = {"compression": "zlib" if page.compression in (8, 32946) else None}  # deflate
      if "XResolution" in page.tags and "YResolution" in page.tags:
        meta["resolution"] = (page.tags["XResolution"].value, page.tags["YResolution"].value)
        meta["resolutionunit"] = int(page.resolutionunit)
      if tf.is_imagej:
        meta["kind"] = "imagej"
        meta["imagej"] = {k: v for k, v in (tf.imagej_metadata or {}).items() if k not in _IMAGEJ_LAYOUT}
      elif tf.is_ome:
        meta["kind"] = "ome"
        meta["ome"] = _ome_metadata(tf.ome_metadata)
      elif tf.is_shaped:
        meta["kind"] = "shaped"
      else:
        meta["kind"] = "pages"
  except ImageError:
    raise
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except Exception as e:  # truncated, corrupt, not a TIFF, or a codec tifffile lacks
    raise ImageError(f"{path}: cannot read TIFF ({type(e).__name__}: {e})") from None
  return Stack(_check_read(path, data), axes, meta)


def write_stack(path: str, stack: Stack) -> None:
  """Writes ``stack`` atomically as a TIFF with the structure it was read with: its axes, page
  count and dtype, ImageJ or OME metadata, resolution, photometric and planar configuration
  (deflate compression is kept; other compressions are written uncompressed). Samples: see
  :class:`Stack`."""
  import tifffile

  if not is_tiff(path):
    raise ImageError(f"{path}: stacks are written as TIFF (.tif, .tiff)")
  data, axes, meta = stack.data, stack.axes.upper(), dict(stack.metadata)
  if len(axes) != data.ndim:
    raise ImageError(f"{path}: axes {axes!r} for data of shape {data.shape}")
  kw: dict = {}
  if meta.get("resolution") is not None:
    kw["resolution"] = tuple(meta["resolution"])
    kw["resolutionunit"] = meta.get("resolutionunit")
  if meta.get("compression"):
    kw["compression"] = meta["compression"]
  photometric = "rgb" if "S" in axes and data.shape[axes.index("S")] in (3, 4) else "minisblack"
  kind = meta.get("kind", "shaped")
  if kind == "imagej":
    kw.update(imagej=True, metadata={"axes": axes, **meta.get("imagej", {})})
  elif kind == "ome":
    kw.update(ome=True, photometric=photometric, metadata={"axes": axes, **meta.get("ome", {})})
  elif kind == "pages":
    kw.update(photometric=photometric, metadata=None)
  else:
    kw.update(photometric=photometric, metadata={"axes": axes})
  if photometric == "rgb" and "S" in axes:
    kw["planarconfig"] = "separate" if axes.index("S") < axes.index("Y") else "contig"
  try:
    with files.atomic_open(path) as f:
      tifffile.imwrite(f, data, **kw)
  except (ValueError, TypeError) as e:
    raise ImageError(f"{path}: cannot write this stack as TIFF ({e})") from None


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


def read_float_image(path: str, *, max_pixels: Optional[int] = MAX_PIXELS) -> np.ndarray:
  """:func:`read_image` (a TIFF's first page) then :func:`as_float`: float32 ``(H, W, C)``."""
  return as_float(read_image(path, first_page=True, max_pixels=max_pixels))


def write_image(path: str, arr: np.ndarray) -> None:
  """Writes ``arr`` (``(H, W)`` or ``(H, W, C)``) atomically, in the format of ``path``'s extension.

  TIFF takes every real dtype; PNG, JPEG (quality 95) and BMP take uint8 (PNG
  also uint16). Raises :class:`ImageError` naming the file otherwise.
  """
  ext = extension(path)
  if not ext:
    raise ImageError(f"{path}: unknown image format; expected a name ending with one of "
                     f"{', '.join(IMAGE_EXTENSIONS)}")
  check_real(arr, path)
  if ext not in (".tif", ".tiff") and arr.dtype not in (np.uint8, np.uint16):
    raise ImageError(f"{path}: {ext} cannot store {arr.dtype} pixels; use .tif")
  with files.atomic_open(path) as f:
    if ext in (".tif", ".tiff"):
      import tifffile

      tifffile.imwrite(f, arr, photometric="rgb" if arr.ndim == 3 and arr.shape[-1] in (3, 4)
                       else "minisblack")
    else:
      from PIL import Image

      a = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
      fmt = _PIL_FORMATS[ext]
      Image.fromarray(a).save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def list_images(path: str) -> list[str]:
  """Image files (by extension) under the folder ``path``, recursively, sorted.

  Hidden files and folders (``.name``, e.g. the temporary files of an
  unfinished atomic write) are skipped.
  """
  found = []
  for d, dirs, fs in os.walk(path):
    dirs[:] = [x for x in dirs if not x.startswith(".")]
    found += [os.path.join(d, f) for f in fs if extension(f) and not f.startswith(".")]
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
