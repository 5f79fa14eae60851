"""Image sources: every image of a data source, as float32 arrays.

A data source is one string:

* ``folder:PATH``: PNG, JPEG, BMP and TIFF files under ``PATH`` (recursive),
  8- or 16-bit (or float TIFF), gray or colour, converted to the model's
  channel count.
* ``builtin:deadleaves`` (training) and ``builtin:deadleaves-val`` (evaluation):
  procedurally generated dead-leaves images, a known training prior for
  denoisers; they need nothing on disk or on the network. ``builtin:text``
  and ``builtin:text-val``: rendered document pages (:func:`text_page`), a
  class of images for class-aware fine-tuning. ``builtin:NAME:N`` sets the
  number of images.
* ``tfds:NAME[:SPLIT]``: a prepared TFDS dataset (:mod:`nedenoise_jax.data.tfds`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from nedenoise_jax.data.errors import DataError
from nedenoise_jax.io.images import IMAGE_EXTENSIONS, list_images, read_float_image, to_channels

__all__ = ["BUILTIN", "DataError", "dead_leaves", "list_folder", "load_images", "read_float_image",
           "text_page", "to_channels"]


def list_folder(path: str) -> list[str]:
  if not os.path.isdir(path):
    raise DataError(f"data folder {path!r} does not exist (from 'folder:{path}')")
  files = list_images(path)
  if not files:
    raise DataError(f"data folder {path!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
  return files


def _read_folder(path: str, channels: int, min_size: int = 1) -> tuple[list[np.ndarray], list[str]]:
  images, names, bad, small, converted = [], [], [], [], 0
  for f in list_folder(path):
    try:
      img = read_float_image(f)
    except Exception as e:  # PIL raises many types for truncated or corrupt files
      bad.append(f"{f} ({type(e).__name__}: {e})")
      continue
    if min(img.shape[:2]) < min_size:
      small.append(f"{f} {img.shape[1]}x{img.shape[0]}")
      continue
    if img.shape[-1] != channels:
      converted += 1
      img = to_channels(img, channels)
    images.append(img)
    names.append(os.path.relpath(f, path))
  if bad:
    warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {path}: " + "; ".join(bad),
                  stacklevel=3)
  if small:
    warnings.warn(f"skipped {len(small)} image(s) in {path} smaller than the {min_size}x{min_size} "
                  f"patch: " + "; ".join(small), stacklevel=3)
  if converted:
    warnings.warn(f"converted {converted} image(s) in {path} to {channels} channel(s)", stacklevel=3)
  if not images:
    raise DataError(f"no usable images left in {path} (unreadable: {len(bad)}, smaller than the "
                    f"patch: {len(small)})")
  return images, names


# --------------------------------------------------------------------------- dead leaves


def dead_leaves(size: int, rng: np.random.Generator, channels: int = 1, *, r_min: float = 1.5,
                r_max: float = 0.5, alpha: float = 3.0, coverage: int = 6) -> np.ndarray:
  """One dead-leaves image, float32 ``(size, size, channels)`` in [0, 1].

  Disks fall on top of each other; radii follow a power law ``r^-alpha``
  between ``r_min`` pixels and ``r_max * size`` (scale invariance, as in
  natural images); colours are uniform. Disks are drawn until their total
  area is about ``coverage`` times the image's, then painted front to back
  (a pixel keeps the first disk that covers it).
  """
  img = np.empty((size, size, channels), np.float32)
  img[:] = rng.uniform(size=channels)
  covered = np.zeros((size, size), np.uint8)
  yy, xx = np.mgrid[0:size, 0:size]
  hi = r_max * size
  # Inverse-CDF sampling of p(r) ~ r^-alpha on [r_min, hi].
  a1 = 1.0 - alpha
  lo_p, hi_p = r_min ** a1, hi ** a1
  disks = []
  budget = coverage * size * size
  area = 0.0
  while area < budget and len(disks) < 20000:
    r = (lo_p + rng.uniform() * (hi_p - lo_p)) ** (1.0 / a1)
    disks.append((rng.uniform(-r, size + r), rng.uniform(-r, size + r), r, rng.uniform(size=channels)))
    area += np.pi * r * r
  # Painted front to back: a pixel keeps the first disk that covers it.
  for cy, cx, r, colour in disks:
    y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 1)
    x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 1)
    if y0 >= y1 or x0 >= x1:
      continue
    sub = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
    sub &= covered[y0:y1, x0:x1] == 0
    if sub.any():
      img[y0:y1, x0:x1][sub] = colour
      covered[y0:y1, x0:x1][sub] = 1
  return img


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:()-"


def text_page(size: int, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
  """One rendered document page, float32 ``(size, size, channels)`` in [0, 1].

  Lines of random words in Pillow's built-in scalable font (no font file
  needed), at a random size, ink and paper grey level, with occasional
  headings and indented paragraphs: sharp high-contrast strokes on flat
  backgrounds, unlike natural images.
  """
  from PIL import Image, ImageDraw, ImageFont

  paper = rng.uniform(0.8, 1.0)
  ink = rng.uniform(0.0, 0.35)
  page = Image.new("F", (size, size), float(paper))
  draw = ImageDraw.Draw(page)
  font_size = int(rng.integers(9, 22))
  font = ImageFont.load_default(size=font_size)
  y = int(rng.integers(0, font_size))
  while y < size:
    heading = rng.uniform() < 0.1
    f = ImageFont.load_default(size=int(font_size * 1.6)) if heading else font
    x = int(rng.integers(2, 4 * font_size)) if rng.uniform() < 0.2 else int(rng.integers(0, 6))
    words = []
    while len(" ".join(words)) * font_size * 0.55 < size - x:
      words.append("".join(rng.choice(list(_LETTERS), size=int(rng.integers(1, 10)))))
    draw.text((x, y), " ".join(words), fill=float(ink), font=f)
    y += int((f.size if hasattr(f, "size") else font_size) * rng.uniform(1.2, 1.8))
  img = np.asarray(page, np.float32)[..., None]
  if channels == 3:  # coloured paper and ink
    tint = rng.uniform(0.85, 1.0, size=3).astype(np.float32)
    img = img * tint
  return np.ascontiguousarray(np.broadcast_to(img, (size, size, channels)), np.float32)


# seed, count, size, generator
BUILTIN = {"deadleaves": (1000, 96, 128, dead_leaves), "deadleaves-val": (2000, 12, 256, dead_leaves),
           "text": (3000, 96, 128, text_page), "text-val": (4000, 12, 256, text_page)}


def _read_builtin(spec: str, channels: int) -> tuple[list[np.ndarray], list[str]]:
  name, _, count = spec.partition(":")
  if name not in BUILTIN:
    raise DataError(f"unknown builtin data {name!r}; expected one of {sorted(BUILTIN)}")
  seed, n, size, make = BUILTIN[name]
  n = int(count) if count else n
  images = [make(size, np.random.default_rng([seed, channels, i]), channels) for i in range(n)]
  return images, [f"{name}_{i:04d}" for i in range(n)]


def load_images(source: str, channels: int, *, min_size: int = 1) -> tuple[list[np.ndarray], list[str]]:
  """All images of a data source as float32 ``(H, W, channels)`` arrays, with names."""
  kind, sep, rest = source.partition(":")
  if not sep or not rest:
    raise DataError(f"data source {source!r} must be 'folder:PATH', 'tfds:NAME[:SPLIT]' or "
                    "'builtin:NAME'")
  if kind == "folder":
    return _read_folder(os.path.expanduser(rest), channels, min_size)
  if kind == "builtin":
    images, names = _read_builtin(rest, channels)
    if min(min(i.shape[:2]) for i in images) < min_size:
      raise DataError(f"{source}: images are smaller than the {min_size}x{min_size} patch")
    return images, names
  if kind == "tfds":
    from nedenoise_jax.data import tfds  # local: TFDS is slow to import

    images, names = tfds.read(rest, channels)
    small = [n for n, i in zip(names, images) if min(i.shape[:2]) < min_size]
    if small:
      warnings.warn(f"skipped {len(small)} image(s) of {source} smaller than the {min_size}x{min_size} "
                    "patch: " + "; ".join(small), stacklevel=2)
      keep = [k for k, i in enumerate(images) if min(i.shape[:2]) >= min_size]
      if not keep:
        raise DataError(f"no image of {source} is at least {min_size}x{min_size}")
      images, names = [images[k] for k in keep], [names[k] for k in keep]
    return images, names
  raise DataError(f"unknown data source kind {kind!r} in {source!r}; expected folder, tfds or builtin")


