"""Image sources and the training input pipeline.

A data source is one string:

* ``folder:PATH``: PNG, JPEG, BMP and TIFF files under ``PATH`` (recursive),
  8- or 16-bit (or float TIFF), gray or colour, converted to the model's
  channel count.
* ``builtin:deadleaves`` (training) and ``builtin:deadleaves-val`` (evaluation):
  procedurally generated dead-leaves images, a known training prior for
  denoisers; they need nothing on disk or on the network. ``builtin:NAME:N``
  sets the number of images.

Training batches are a pure function of the global sample index: sample ``i``
picks its image, crop, flip/rotation and noise level from
``numpy.random.default_rng([seed, i])``. Process ``p`` of ``P`` reads its
slice of every global batch. The data a run sees therefore does not depend on
the number of devices or processes, and resuming at step ``k`` is exact.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
  """A data source that cannot be used (named in the message)."""


# --------------------------------------------------------------------------- reading


def read_image(path: str) -> np.ndarray:
  """Reads an image file as float32 ``(H, W, C)`` scaled to [0, 1] for integer files.

  8-bit files are divided by 255 and 16-bit files by 65535; float TIFFs are
  returned as stored. Palette and other modes are converted to RGB or L.
  """
  from PIL import Image  # local: only reading needs Pillow

  with Image.open(path) as im:
    im.load()
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
      arr = np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
    elif mode == "I":
      arr = np.asarray(im, dtype=np.int32)
      arr = arr.astype(np.float32) / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    elif mode == "F":
      arr = np.asarray(im, dtype=np.float32)
    else:
      if mode not in ("L", "RGB"):  # palette, bilevel, CMYK, with alpha...: alpha is dropped
        im = im.convert("L" if mode in ("1", "LA", "La") else "RGB")
      arr = np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0
  if arr.ndim == 2:
    arr = arr[:, :, None]
  if arr.size == 0:
    raise DataError(f"{path}: empty image (shape {arr.shape})")
  if not np.all(np.isfinite(arr)):
    raise DataError(f"{path}: contains NaN or Inf pixels")
  return arr


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
  """Gray -> colour by repetition; colour -> gray with ITU-R BT.601 weights."""
  c = img.shape[-1]
  if c == channels:
    return img
  if c == 1 and channels == 3:
    return np.repeat(img, 3, axis=-1)
  if c == 3 and channels == 1:
    return (img @ np.asarray([0.299, 0.587, 0.114], np.float32))[:, :, None]
  raise DataError(f"cannot convert an image with {c} channels to {channels}")


def list_folder(path: str) -> list[str]:
  if not os.path.isdir(path):
    raise DataError(f"data folder {path!r} does not exist (from 'folder:{path}')")
  files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                 if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(f))
  if not files:
    raise DataError(f"data folder {path!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
  return files


def _read_folder(path: str, channels: int, min_size: int = 1) -> tuple[list[np.ndarray], list[str]]:
  images, names, bad, small, converted = [], [], [], [], 0
  for f in list_folder(path):
    try:
      img = read_image(f)
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


BUILTIN = {"deadleaves": (1000, 96, 128), "deadleaves-val": (2000, 12, 256)}  # seed, count, size


def _read_builtin(spec: str, channels: int) -> tuple[list[np.ndarray], list[str]]:
  name, _, count = spec.partition(":")
  if name not in BUILTIN:
    raise DataError(f"unknown builtin data {name!r}; expected one of {sorted(BUILTIN)}")
  seed, n, size = BUILTIN[name]
  n = int(count) if count else n
  images = [dead_leaves(size, np.random.default_rng([seed, channels, i]), channels) for i in range(n)]
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
    from nedenoise_jax import tfds_datasets  # local: TFDS is slow to import

    images, names = tfds_datasets.read(rest, channels)
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


# --------------------------------------------------------------------------- training batches


@dataclass
class PatchSampler:
  """Maps a global sample index to a training example (pure, deterministic)."""

  images: Sequence[np.ndarray]
  patch_size: int
  sigma_min: float  # image units ([0, 1] scale)
  sigma_max: float
  seed: int

  def __call__(self, index: int) -> tuple[np.ndarray, np.float32]:
    rng = np.random.default_rng([self.seed, index])
    img = self.images[rng.integers(len(self.images))]
    h, w = img.shape[:2]
    p = self.patch_size
    y, x = rng.integers(h - p + 1), rng.integers(w - p + 1)
    patch = img[y:y + p, x:x + p]
    k = rng.integers(8)  # the 8 flips/rotations
    patch = np.rot90(patch, k % 4)
    if k >= 4:
      patch = patch[:, ::-1]
    sigma = rng.uniform(self.sigma_min, self.sigma_max)
    return np.ascontiguousarray(patch, np.float32), np.float32(sigma)


@dataclass
class BatchMaker:
  """Global batch ``step`` -> this process's slice ``{"clean": (b, P, P, C), "sigma": (b,)}``."""

  sampler: PatchSampler
  global_batch: int
  process_index: int = 0
  process_count: int = 1

  def __call__(self, step: int) -> dict:
    local = self.global_batch // self.process_count
    first = step * self.global_batch + self.process_index * local
    pairs = [self.sampler(first + j) for j in range(local)]
    return {"clean": np.stack([p for p, _ in pairs]), "sigma": np.stack([s for _, s in pairs])}


def train_batches(images: Sequence[np.ndarray], *, patch_size: int, sigma_min: float,
                  sigma_max: float, seed: int, global_batch: int, start_step: int, end_step: int,
                  process_index: int = 0, process_count: int = 1,
                  num_workers: int = 0) -> Iterator[dict]:
  """Iterates this process's batches for steps ``start_step .. end_step - 1`` (grain).

  ``num_workers > 0`` decodes batches in that many worker processes.
  """
  import grain

  if global_batch % process_count:
    raise DataError(f"global batch size {global_batch} is not divisible by the {process_count} "
                    "processes")
  maker = BatchMaker(PatchSampler(images, patch_size, sigma_min, sigma_max, seed), global_batch,
                     process_index, process_count)
  ds = grain.MapDataset.range(start_step, end_step).map(maker).to_iter_dataset()
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)
