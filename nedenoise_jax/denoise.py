"""Denoise images: a function for arrays and a command line for files.

nedenoise denoise photo.png scan.tif --out denoised/
python -m nedenoise_jax.denoise photo.png scan.tif --out denoised/   (the same)

An NE model needs no normalization: the pixels go in as they are (8-bit and
16-bit integers are divided by their type's maximum only so that the ordinary
models, trained on [0, 1], see their usual range; float images are used as
stored, whatever their range), and the result comes back in the input's type
and range. Large images are processed in overlapping tiles so that memory stays
bounded; with an overlap of at least the receptive radius the tiled result
equals the whole-image one.

A model is loaded once per spec string (:func:`loading.load_cached`) and its
apply function compiled once per model, options and tile shape, then reused
by every later call and image.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import files, loading
from nedenoise_jax import noise as noise_lib
from nedenoise_jax.io import images as image_io
from nedenoise_jax.io import weights as weights_lib
from nedenoise_jax.io.images import IMAGE_EXTENSIONS as EXTENSIONS
from nedenoise_jax.io.images import ImageError, read_image as read_file, write_image as write_file
from nedenoise_jax import kernels
from nedenoise_jax.kernels import xla_options
from nedenoise_jax.nn import models

DEFAULT_MODELS = {1: "pretrained:gray-norm_equiv", 3: "pretrained:color-norm_equiv"}
ModelArg = Union[str, tuple, None]


# --------------------------------------------------------------------------- noise level


def estimate_sigma(image: np.ndarray) -> float:
  """Noise standard deviation of ``image`` (``HW`` or ``HWC``), in its own units
  (:func:`nedenoise_jax.noise.estimate_sigma`: Donoho's wavelet estimator)."""
  try:
    return noise_lib.estimate_sigma(image)
  except ValueError as e:
    raise ImageError(str(e)) from None


def estimate_noise_map(image: Any, model: ModelArg = None, *, method: str = "local",
                       window: int = 32, variables=None) -> np.ndarray:
  """A per-pixel noise standard deviation map of ``image``, in the image's units.

  Args:
    image: ``HW``, ``HWC`` or ``NHWC``; integer images in their type's units
      (a uint8 map is on the 0-255 scale), float images as they are.
    model: a blind CBDNet (``"pretrained:NAME"``, weights file, workdir or
      ``(module, variables)``): its noise estimator. ``None``: a classical
      estimator (:func:`nedenoise_jax.noise.classical_noise_map`), ``method``
      ``"global"``, ``"local"`` (cells of ``window`` pixels) or
      ``"poisson_gaussian"`` (a fitted noise-level function).

  Returns ``(H, W, 1)`` float32 for ``HW``/``HWC`` input, ``(N, H, W, 1)`` for ``NHWC``.
  """
  if variables is not None:
    model = (model, variables)
  x, _, layout = _split(image)
  scale = _scale_of(x.dtype) or 1.0
  xf = x.astype(np.float32) / np.float32(scale)
  if not np.all(np.isfinite(xf)):
    raise ImageError("the image contains NaN or Inf pixels")
  if model is None:
    try:
      maps = np.stack([noise_lib.classical_noise_map(img, method=method, window=window) for img in xf])
    except ValueError as e:
      raise ImageError(str(e)) from None
  else:
    module, variables = resolve_model(model, x.shape[-1])
    if not models.estimates_noise(module):
      raise ValueError(f"estimate_noise_map needs a blind CBDNet model, got "
                       f"{models.describe(module)['arch']} (blind={models.describe(module)['blind']}); "
                       "or pass model=None for a classical estimator")
    fn = _make_estimator(module)
    maps = np.concatenate([np.asarray(fn(variables, jnp.asarray(xf[n:n + 1]))) for n in range(len(xf))])
  maps = (maps * scale).astype(np.float32)
  return maps if layout == "NHWC" else maps[0]


def _new_estimator(module):
  return xla_options.jit(lambda variables, x: models.estimate_map(module, variables, x))


_make_estimator = kernels.per_cpu_path(_new_estimator)


def _map_of(sigma, xf: np.ndarray, scale: Optional[float]) -> Optional[np.ndarray]:
  """A per-pixel map ``(N, H, W, 1)`` (model units) from ``sigma``, or None for a scalar / None.

  ``sigma``: an array (``HW``, ``HW1``, ``NHW1``, in the image's units), or a
  classical estimator's name (``"local"``, ``"global"``, ``"poisson_gaussian"``).
  """
  n, h, w, _ = xf.shape
  if sigma is None or np.ndim(sigma) == 0 and not isinstance(sigma, str):
    return None
  if isinstance(sigma, str):
    if sigma not in noise_lib.ESTIMATORS:
      raise ImageError(f"sigma={sigma!r}: expected a number, a map, or one of {noise_lib.ESTIMATORS}")
    return np.stack([noise_lib.classical_noise_map(img, method=sigma) for img in xf]).astype(np.float32)
  m = np.asarray(sigma, np.float32)
  if m.shape in ((h, w), (h, w, 1)):
    m = np.broadcast_to(m.reshape(1, h, w, 1), (n, h, w, 1))
  elif m.shape != (n, h, w, 1):
    raise ImageError(f"noise map of shape {m.shape} for an image of shape {(n, h, w)}: expected "
                     f"({h}, {w}), ({h}, {w}, 1) or ({n}, {h}, {w}, 1)")
  if not np.all(np.isfinite(m)) or np.any(m < 0):
    raise ImageError("the noise map has negative, NaN or infinite values; expected standard "
                     "deviations >= 0 in the image's units")
  return m / np.float32(scale or 1.0)


# --------------------------------------------------------------------------- models


def receptive_radius(module) -> Optional[int]:
  """Pixels on each side that influence one output pixel, where known exactly."""
  inner = module.inner if isinstance(module, models.Wrapped) else module
  if isinstance(inner, (models.FDnCNN, models.DnCNN)):
    return int(inner.depth)  # one 3x3 convolution per layer
  if isinstance(inner, models.FFDNet):  # 3x3 convolutions at half resolution, plus the 2x2 block
    return 2 * int(inner.depth) + 1
  if isinstance(inner, models.CBDNet) and inner.denoiser in ("fdncnn", "ffdnet"):
    den = {"fdncnn": int(inner.depth), "ffdnet": 2 * int(inner.depth) + 1}[inner.denoiser]
    return den + (int(inner.estimator_depth) if inner.blind else 0)
  return None


def resolve_model(model: ModelArg, channels: int):
  """``(module, variables)`` from a spec string, a ``(module, variables)`` pair or ``None``."""
  if model is None or model == "auto":
    if channels not in DEFAULT_MODELS:
      raise ImageError(f"no default model for {channels}-channel images")
    model = DEFAULT_MODELS[channels]
  if isinstance(model, (str, os.PathLike)):
    return loading.load_cached(model)
  module, variables = model
  return module, variables


# --------------------------------------------------------------------------- arrays


def _dihedral(x: jax.Array, k: int, inverse: bool = False) -> jax.Array:
  """One of the 8 flips/rotations of NHWC ``x`` (``inverse`` undoes it)."""
  rot, flip = k % 4, k // 4
  if inverse:
    if flip:
      x = x[:, :, ::-1]
    return jnp.rot90(x, -rot, axes=(1, 2))
  x = jnp.rot90(x, rot, axes=(1, 2))
  return x[:, :, ::-1] if flip else x


def _new_apply(module, blind: bool, ensemble: bool):
  """The jitted ``apply(variables, x, sigma, map_scale)`` of ``module``; :func:`_make_apply`
  keeps one per (module, blind, ensemble, CPU path). ``x``: ``(N, H, W, C)``; ``sigma``:
  ``(N,)`` or a map ``(N, H, W, 1)``; ``map_scale`` reaches models that estimate their map."""
  estimates = models.estimates_noise(module)

  @xla_options.jit
  def apply(variables, x, sigma, map_scale):
    s = None if blind else sigma
    kw = {"map_scale": map_scale} if estimates else {}

    def one(k):
      sk = s if s is None or s.ndim == 1 else _dihedral(s, k)
      return _dihedral(module.apply(variables, _dihedral(x, k), sk, **kw), k, inverse=True)

    if not ensemble:
      return module.apply(variables, x, s, **kw)
    return sum(one(k) for k in range(8)) / 8.0
  return apply


_make_apply = kernels.per_cpu_path(_new_apply)


def _tiles(n: int, tile: int, overlap: int, align: int = 8):
  """(core start, core end, window start, window end) along one axis."""
  out = []
  for c0 in range(0, n, tile):
    c1 = min(n, c0 + tile)
    e0 = max(0, c0 - overlap) // align * align
    e1 = min(n, c1 + overlap)
    out.append((c0, c1, e0, e1))
  return out


def _split(image: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray], str]:
  """``(N, H, W, C)`` colour part, alpha (or None) and the input layout."""
  a = np.asarray(image)
  if a.ndim == 2:
    layout, a = "HW", a[None, :, :, None]
  elif a.ndim == 3:
    layout, a = "HWC", a[None]
  elif a.ndim == 4:
    layout = "NHWC"
  else:
    raise ImageError(f"expected an HW, HWC or NHWC image, got shape {a.shape}")
  image_io.check_real(a, f"the image (shape {np.shape(image)})")
  if a.size == 0 or min(a.shape[1:3]) == 0:
    raise ImageError(f"empty image (shape {np.shape(image)})")
  c = a.shape[-1]
  if c == 4:
    return a[..., :3], a[..., 3:], layout
  if c in (1, 3):
    return a, None, layout
  raise ImageError(f"unsupported channel count {c} in shape {np.shape(image)}; expected 1 (gray), "
                   "3 (RGB) or 4 (RGBA, alpha kept as is)")


def _scale_of(dtype) -> Optional[float]:
  if np.issubdtype(dtype, np.integer):
    return float(np.iinfo(dtype).max)
  if dtype == np.bool_:
    return 1.0
  return None


TILE_MAX = 16384  # pixels on a tile's side: a larger one is a typo, not a tile
BATCH_PIXELS = 1 << 20  # pixels per model call when batching images (the default whole-image size)


def check_options(*, sigma: Any = None, tile: Optional[int] = None, overlap: Optional[int] = None,
                  map_scale: float = 1.0, batch: Optional[int] = None, cli: bool = False) -> None:
  """Raises :class:`ImageError` naming the argument and its value (``--tile 3`` with ``cli``, else
  ``tile=3``) unless: ``sigma`` (when a number) is finite and >= 0, ``tile`` a multiple of 8 in
  [8, TILE_MAX], ``overlap`` in [0, TILE_MAX], ``map_scale`` finite and >= 0, ``batch`` >= 1.
  :func:`denoise` checks its arguments so; the command checks its flags before any work."""
  def bad(name, value, expected):
    raise ImageError(f"{f'--{name} {value}' if cli else f'{name}={value!r}'}: expected {expected}")

  def integer(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

  if sigma is not None and not isinstance(sigma, str) and np.ndim(sigma) == 0:
    if not (np.isfinite(float(sigma)) and float(sigma) >= 0):
      bad("sigma", sigma, "a finite noise level >= 0, in the image's pixel units")
  if tile is not None and not (integer(tile) and 8 <= tile <= TILE_MAX and tile % 8 == 0):
    bad("tile", tile, f"a multiple of 8 from 8 to {TILE_MAX}")
  if overlap is not None and not (integer(overlap) and 0 <= overlap <= TILE_MAX):
    bad("overlap", overlap, f"pixels of context from 0 to {TILE_MAX}")
  if not (np.isfinite(float(map_scale)) and float(map_scale) >= 0):
    bad("map_scale", map_scale, "a finite factor >= 0")
  if batch is not None and not (integer(batch) and batch >= 1):
    bad("batch", batch, "a number of images >= 1")


def denoise(image: Any, model: ModelArg = None, sigma: Any = None, *,
            tile: Optional[int] = None, overlap: Optional[int] = None, ensemble: bool = False,
            variables=None, progress: bool = False, map_scale: float = 1.0,
            batch: Optional[int] = None) -> np.ndarray:
  """Denoises ``image`` (``HW``, ``HWC`` or ``NHWC``; 1, 3 or 4 channels).

  Args:
    image: integer images are read on their type's full range (uint8: 0-255,
      uint16: 0-65535); float images as they are, any range (NE models need no
      normalization). A 4th channel is alpha: passed through untouched.
      Complex and other non-real pixels are an error.
    model: ``"pretrained:NAME"``, a weights file, a training workdir, a
      ``(module, variables)`` pair, or ``None`` for the shipped NE model of the
      image's channel count.
    sigma: noise standard deviation (finite, >= 0) in the image's own pixel
      units (e.g. 25 for a uint8 image), or a per-pixel map (``HW``, ``HW1`` or
      ``NHW1``, same units), or the name of a classical map estimator
      (``"local"``, ``"global"``, ``"poisson_gaussian"``, see
      :func:`estimate_noise_map`). A number is ignored by blind models (a map
      is an error); estimated from each image (see :func:`estimate_sigma`) for
      non-blind ones when not given.
    map_scale: multiplies the noise map: the one given or estimated for a
      non-blind model, or a blind CBDNet's own estimate (the interactive
      correction of Guo et al. 2019: > 1 removes more noise, < 1 keeps detail).
    tile: process in tiles of this size (a multiple of 8); default: whole images
      up to 1024x1024, tiles of 512 above.
    overlap: context around each tile (>= 0); default the receptive radius
      rounded up to 8 (FDnCNN/DnCNN: exact result) or 64 (DRUNet: close, see README).
    ensemble: average the 8 flips/rotations (x8 self-ensemble).
    progress: show a progress bar over the tiles when there is more than one
      (a 4000x3000 image takes minutes with DRUNet on a CPU).
    batch: images of an ``NHWC`` input (a stack's planes) denoised per model
      call; default as many as fit in ``BATCH_PIXELS`` pixels per tile. Each
      image's result is the one it gets alone.

  Returns an array of the input's shape and dtype (integers rounded and clipped).
  """
  check_options(sigma=sigma, tile=tile, overlap=overlap, map_scale=map_scale, batch=batch)
  if variables is not None:
    model = (model, variables)
  x, alpha, layout = _split(image)
  dtype = x.dtype
  scale = _scale_of(dtype)
  xf = x.astype(np.float32) / np.float32(scale) if scale else x.astype(np.float32)
  if not np.all(np.isfinite(xf)):
    raise ImageError("the image contains NaN or Inf pixels")
  module, variables = resolve_model(model, x.shape[-1])
  desc = models.describe(module)
  if desc["channels"] != x.shape[-1]:
    raise ImageError(f"the model takes {desc['channels']}-channel images, the image has "
                     f"{x.shape[-1]} (shape {np.shape(image)})")
  blind = bool(desc["blind"])
  radius = receptive_radius(module)
  if overlap is None:
    overlap = 64 if radius is None else -(-radius // 8) * 8
  n_img, h, w = x.shape[:3]
  if tile is None:
    tile = max(h, w) if h * w <= 1024 * 1024 else 512
    tile = -(-tile // 8) * 8
  apply = _make_apply(module, blind, ensemble)
  if blind and (isinstance(sigma, str) or np.ndim(sigma) > 0):
    raise ImageError(f"the model is blind ({desc['arch']}, {desc['mode']}): it takes no noise map; "
                     "give sigma=None, or a non-blind model")
  if blind and map_scale != 1.0 and not models.estimates_noise(module):
    raise ImageError(f"map_scale={map_scale}: the model ({desc['arch']}, blind) has no noise map to "
                     "scale; expected a non-blind model or a blind CBDNet")
  noise_map = None if blind else _map_of(sigma, xf, scale)
  if noise_map is not None:
    noise_map = noise_map * np.float32(map_scale)
  levels = None  # one sigma per image (model units), where no map is given
  if noise_map is None:
    if blind:
      levels = np.zeros(n_img, np.float32)
    elif sigma is not None:
      levels = np.full(n_img, float(sigma) / (scale or 1.0), np.float32)
    else:
      levels = np.asarray([estimate_sigma(img) for img in xf], np.float32)
    levels = levels * np.float32(map_scale)
  ms = jnp.asarray(map_scale, jnp.float32)
  out = np.empty_like(xf)
  rows, cols = _tiles(h, tile, overlap), _tiles(w, tile, overlap)
  if batch is None:
    window = max(r[3] - r[2] for r in rows) * max(c[3] - c[2] for c in cols)
    batch = max(1, BATCH_PIXELS // window)
  batch = min(batch, n_img)
  groups = [np.arange(g, g + batch).clip(max=n_img - 1) for g in range(0, n_img, batch)]
  bar = None
  if progress and len(groups) * len(rows) * len(cols) > 1:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(groups) * len(rows) * len(cols), desc="tiles", unit="tile", leave=False,
               dynamic_ncols=True)
  for idx in groups:  # the last group repeats its last image: one compiled shape for all
    real = len(np.unique(idx))
    imgs = xf[idx]
    sig = None if levels is None else jnp.asarray(levels[idx])
    for r0, r1, a0, a1 in rows:
      for c0, c1, b0, b1 in cols:
        if levels is None:
          sig = jnp.asarray(noise_map[idx, a0:a1, b0:b1])
        res = np.asarray(apply(variables, jnp.asarray(imgs[:, a0:a1, b0:b1]), sig, ms))
        out[idx[:real], r0:r1, c0:c1] = res[:real, r0 - a0:r1 - a0, c0 - b0:c1 - b0]
        if bar is not None:
          bar.update()
  if bar is not None:
    bar.refresh()  # the final count is drawn even when the last tiles came faster than tqdm redraws
    bar.close()
  if scale:
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (info.min, info.max) if info else (0, 1)
    out = np.clip(np.rint(out * scale), lo, hi).astype(dtype)
  else:
    out = out.astype(dtype)
  if alpha is not None:
    out = np.concatenate([out, alpha], axis=-1)
  if layout == "HW":
    return out[0, :, :, 0]
  if layout == "HWC":
    return out[0]
  return out


def _planes_last(axes: str) -> list[int]:
  """The transpose that puts ``axes``' plane letters last, as ``(..., Y, X[, S])``."""
  return ([i for i, c in enumerate(axes) if c not in image_io.PLANE_AXES]
          + [axes.index(c) for c in image_io.PLANE_AXES if c in axes])


def denoise_stack(stack: Any, axes: str, model: ModelArg = None, sigma: Any = None, **kwargs) -> np.ndarray:
  """Denoises every 2-D plane of ``stack`` (a microscopy z-stack, time series, hyperstack, ...).

  Args:
    stack: an array of any rank with one letter per axis in ``axes``.
    axes: tifffile's letters, e.g. ``"ZYX"``, ``"TZCYX"``, ``"YXS"``: ``Y`` and
      ``X`` are the plane; ``S`` holds the samples of a colour image (3 RGB,
      4 RGBA, 2 gray + alpha; alpha kept as is); every other axis (``Z``,
      ``T``, ``C`` channels, ``I`` pages, ...) indexes planes, each denoised
      as its own gray (or, with ``S``, colour) image, in batches.
    model, sigma: as in :func:`denoise`: ``sigma`` a number in the stack's
      pixel units for every plane, an estimator name, or a map of the stack's
      shape without ``S``; ``None`` estimates each plane's level.
    kwargs: the other options of :func:`denoise` (tile, overlap, ensemble, batch, ...).

  Returns an array of the stack's shape and dtype; each plane equals :func:`denoise`
  of that plane alone.
  """
  a = np.asarray(stack)
  ax = str(axes).upper()
  if len(ax) != a.ndim or len(set(ax)) != len(ax) or not {"Y", "X"} <= set(ax):
    raise ImageError(f"axes={axes!r} for a stack of shape {a.shape}: expected one distinct letter per "
                     "axis, with Y and X (e.g. 'ZYX', 'TZCYX', 'YXS')")
  samples = a.shape[ax.index("S")] if "S" in ax else 1
  if samples not in (1, 2, 3, 4):
    raise ImageError(f"axes={axes!r}, shape {a.shape}: the S axis has {samples} samples; expected 1, "
                     "2 (gray + alpha), 3 (RGB) or 4 (RGBA)")
  order = _planes_last(ax)
  moved = np.transpose(a, order)
  h, w = a.shape[ax.index("Y")], a.shape[ax.index("X")]
  planes = moved.reshape(-1, h, w, samples)
  if sigma is not None and not isinstance(sigma, str) and np.ndim(sigma) > 0:
    m = np.asarray(sigma)
    plane_shape = tuple(n for n, c in zip(a.shape, ax) if c != "S")
    if m.shape != plane_shape:
      raise ImageError(f"noise map of shape {m.shape} for a stack of shape {a.shape} (axes {ax}): "
                       f"expected {plane_shape}")
    sigma = np.transpose(m, _planes_last(ax.replace("S", ""))).reshape(-1, h, w, 1)
  if samples == 2:  # gray + alpha
    out = np.concatenate([denoise(planes[..., :1], model, sigma, **kwargs), planes[..., 1:]], axis=-1)
  else:
    out = denoise(planes, model, sigma, **kwargs)
  return np.transpose(out.reshape(moved.shape), np.argsort(order))


# --------------------------------------------------------------------------- files


def _inputs(paths: Sequence[str]) -> list[str]:
  """The image files named or found under the folders named; a missing path is an error."""
  found = []
  for p in paths:
    if os.path.isdir(p):
      inside = image_io.list_images(p)
      if not inside:
        hidden = [f for _, _, fs in os.walk(p) for f in fs if f.startswith(".") and image_io.extension(f)]
        note = (f" ({len(hidden)} hidden image file(s), named '.*', skipped: name them to denoise them)"
                if hidden else "")
        raise ImageError(f"{p}: folder holds no {'/'.join(EXTENSIONS)} images{note}")
      found += inside
    elif os.path.lexists(p):
      found.append(p)
    else:
      raise ImageError(f"{p}: no such file or folder")
  return found


def _denoise_file(path: str, out: str, loaded: dict, args) -> None:
  """Reads, denoises and writes one file (a TIFF stack plane by plane, with its structure);
  raises ImageError or OSError for this file only."""
  if image_io.is_stack(path):
    stack = image_io.read_stack(path, max_pixels=args.max_pixels, max_stack_pixels=args.max_stack_pixels)
    data, axes = stack.data, stack.axes
  else:
    stack, data = None, read_file(path, max_pixels=args.max_pixels)
    axes = "YX" if data.ndim == 2 else "YXS"
  samples = data.shape[axes.index("S")] if "S" in axes else 1
  key = (args.model, 1 if samples <= 2 else 3)  # gray (+ alpha) or colour (+ alpha)
  if key not in loaded:
    loaded[key] = resolve_model(*key)
  res = denoise_stack(data, axes, loaded[key], args.noise_map or args.sigma, tile=args.tile,
                      overlap=args.overlap, ensemble=args.ensemble, progress=True,
                      map_scale=args.map_scale)
  if stack is None:
    write_file(out, res)
  else:
    image_io.write_stack(out, image_io.Stack(res, axes, stack.metadata))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command; exit status 0: every image written, 1: some skipped (each named on stderr),
  2: a usage error (a flag, an input or ``--out``), found before any image is denoised."""
  import argparse

  from tqdm.auto import tqdm

  p = argparse.ArgumentParser(prog="nedenoise denoise", description=__doc__.split("\n\n")[0])
  p.add_argument("inputs", nargs="+", help="image files or folders (PNG, JPEG, BMP, TIFF incl. stacks)")
  p.add_argument("--out", required=True, help="output folder (same file names and formats)")
  p.add_argument("--model", default="auto",
                 help="pretrained:NAME, a weights file or a training workdir (default: the shipped NE "
                      f"model for the image's channels; shipped: {', '.join(weights_lib.pretrained_names())})")
  p.add_argument("--sigma", type=float, default=None,
                 help="noise level in the image's pixel units (non-blind models; estimated if not given)")
  p.add_argument("--noise_map", choices=noise_lib.ESTIMATORS, default=None,
                 help="give non-blind models a per-pixel noise map from this classical estimator "
                      "instead of one sigma")
  p.add_argument("--map_scale", type=float, default=1.0,
                 help="multiply the noise map (a blind CBDNet's estimate, or the one given): > 1 "
                      "removes more noise, < 1 keeps more detail")
  p.add_argument("--tile", type=int, default=None,
                 help="tile size, a multiple of 8 (default: whole images up to 1024x1024, else 512)")
  p.add_argument("--overlap", type=int, default=None, help="tile context >= 0 (default: receptive radius)")
  p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (flips/rotations)")
  p.add_argument("--max_pixels", type=int, default=image_io.MAX_PIXELS,
                 help="refuse images (stack planes) claiming more pixels; 0: no limit "
                      f"(default {image_io.MAX_PIXELS:,}, Pillow's bomb limit)")
  p.add_argument("--max_stack_pixels", type=int, default=image_io.MAX_STACK_PIXELS,
                 help=f"refuse stacks claiming more pixels over all planes; 0: no limit (default "
                      f"{image_io.MAX_STACK_PIXELS:,})")
  p.add_argument("--force", action="store_true", help="replace existing outputs (never an input)")
  args = p.parse_args(argv)
  try:
    if args.noise_map and args.sigma is not None:
      raise ImageError("give --sigma (one level) or --noise_map (a per-pixel estimate), not both")
    check_options(sigma=args.sigma, tile=args.tile, overlap=args.overlap, map_scale=args.map_scale,
                  cli=True)
    for flag in ("max_pixels", "max_stack_pixels"):
      if getattr(args, flag) < 0:
        raise ImageError(f"--{flag} {getattr(args, flag)}: expected a number of pixels >= 1, or 0 "
                         "for no limit")
      setattr(args, flag, getattr(args, flag) or None)
    inputs_found = _inputs(args.inputs)
    if args.model != "auto":
      try:
        loading.load_cached(args.model)  # a wrong --model is found now, not after the first image
      except (FileNotFoundError, ValueError) as e:
        raise ImageError(f"--model {args.model}: {e}") from None
    files.prepare_dir(args.out)
    inputs = {os.path.realpath(f) for f in inputs_found}
    targets = []
    for f in inputs_found:
      out = os.path.join(args.out, os.path.basename(f))
      if os.path.realpath(out) in inputs:
        raise ImageError(f"{out} would overwrite the input {f}; choose another --out")
      if os.path.lexists(out) and not args.force:
        raise ImageError(f"{out} exists; pass --force to replace it")
      targets.append(out)
    if len(set(targets)) != len(targets):
      raise ImageError("two inputs have the same file name; denoise them into different --out folders")
  except (ImageError, files.OutputError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  loaded: dict = {}
  failed = 0
  for f, out in tqdm(list(zip(inputs_found, targets)), desc="denoise", unit="img", dynamic_ncols=True):
    try:
      _denoise_file(f, out, loaded, args)
    except (ImageError, OSError) as e:  # this file only: the batch goes on
      failed += 1
      # Readers raise ImageError for every failure, so an OSError is the output's.
      msg = f"cannot write {out} ({e.strerror or e})" if isinstance(e, OSError) else str(e)
      tqdm.write(f"error: {msg}" if msg.startswith(f) else f"error: {f}: {msg}", file=sys.stderr)
  print(f"denoised {len(inputs_found) - failed} of {len(inputs_found)} image(s) into {args.out}")
  return 1 if failed else 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
