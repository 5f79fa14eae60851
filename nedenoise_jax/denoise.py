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

from nedenoise_jax import loading
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
  if isinstance(inner, models.CBDNet) and inner.denoiser != "drunet":
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
  keeps one per (module, blind, ensemble, CPU path). ``sigma``: ``(1,)`` or a map
  ``(1, H, W, 1)``; ``map_scale`` reaches models that estimate their map."""
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


def denoise(image: Any, model: ModelArg = None, sigma: Any = None, *,
            tile: Optional[int] = None, overlap: Optional[int] = None, ensemble: bool = False,
            variables=None, progress: bool = False, map_scale: float = 1.0) -> np.ndarray:
  """Denoises ``image`` (``HW``, ``HWC`` or ``NHWC``; 1, 3 or 4 channels).

  Args:
    image: integer images are read on their type's full range (uint8: 0-255,
      uint16: 0-65535); float images as they are, any range (NE models need no
      normalization). A 4th channel is alpha: passed through untouched.
    model: ``"pretrained:NAME"``, a weights file, a training workdir, a
      ``(module, variables)`` pair, or ``None`` for the shipped NE model of the
      image's channel count.
    sigma: noise standard deviation in the image's own pixel units (e.g. 25 for
      a uint8 image), or a per-pixel map (``HW``, ``HW1`` or ``NHW1``, same
      units), or the name of a classical map estimator (``"local"``,
      ``"global"``, ``"poisson_gaussian"``, see :func:`estimate_noise_map`).
      A number is ignored by blind models (a map is an error); estimated from
      the image (see :func:`estimate_sigma`) for non-blind ones when not given.
    map_scale: multiplies the noise map: the one given or estimated for a
      non-blind model, or a blind CBDNet's own estimate (the interactive
      correction of Guo et al. 2019: > 1 removes more noise, < 1 keeps detail).
    tile: process in tiles of this size (multiple of 8); default: whole images
      up to 1024x1024, tiles of 512 above.
    overlap: context around each tile; default the receptive radius rounded up
      to 8 (FDnCNN/DnCNN: exact result) or 64 (DRUNet: close, see README).
    ensemble: average the 8 flips/rotations (x8 self-ensemble).
    progress: show a progress bar over the tiles when there is more than one
      (a 4000x3000 image takes minutes with DRUNet on a CPU).

  Returns an array of the input's shape and dtype (integers rounded and clipped).
  """
  if variables is not None:
    model = (model, variables)
  x, alpha, layout = _split(image)
  dtype = x.dtype
  if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
    raise ImageError(f"unsupported pixel type {dtype}")
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
  h, w = x.shape[1:3]
  if tile is None:
    tile = max(h, w) if h * w <= 1024 * 1024 else 512
  tile = max(8, -(-tile // 8) * 8)
  apply = _make_apply(module, blind, ensemble)
  if blind and (isinstance(sigma, str) or np.ndim(sigma) > 0):
    raise ImageError(f"the model is blind ({desc['arch']}, {desc['mode']}): it takes no noise map; "
                     "give sigma=None, or a non-blind model")
  if blind and map_scale != 1.0 and not models.estimates_noise(module):
    raise ImageError(f"map_scale={map_scale}: the model ({desc['arch']}, blind) has no noise map to "
                     "scale; expected a non-blind model or a blind CBDNet")
  noise_map = None if blind else _map_of(sigma, xf, scale)
  if not (np.isfinite(map_scale) and map_scale >= 0):
    raise ImageError(f"map_scale={map_scale}: expected a finite factor >= 0")
  ms = jnp.asarray(map_scale, jnp.float32)
  out = np.empty_like(xf)
  rows, cols = _tiles(h, tile, overlap), _tiles(w, tile, overlap)
  bar = None
  if progress and len(rows) * len(cols) > 1:
    from tqdm.auto import tqdm

    bar = tqdm(total=x.shape[0] * len(rows) * len(cols), desc="tiles", unit="tile", leave=False,
               dynamic_ncols=True)
  for n in range(x.shape[0]):
    img = xf[n:n + 1]
    if blind:
      s = 0.0
    elif noise_map is not None:
      s = None
    elif sigma is not None:
      s = float(sigma) / (scale or 1.0)
    else:
      s = estimate_sigma(img[0])
    if s is not None:
      sig = jnp.full((1,), s * map_scale, jnp.float32)
    for r0, r1, a0, a1 in rows:
      for c0, c1, b0, b1 in cols:
        if s is None:
          sig = jnp.asarray(noise_map[n:n + 1, a0:a1, b0:b1] * np.float32(map_scale))
        res = np.asarray(apply(variables, jnp.asarray(img[:, a0:a1, b0:b1]), sig, ms))
        out[n, r0:r1, c0:c1] = res[0, r0 - a0:r1 - a0, c0 - b0:c1 - b0]
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


# --------------------------------------------------------------------------- files


def _inputs(paths: Sequence[str]) -> list[str]:
  files = []
  for p in paths:
    if os.path.isdir(p):
      found = image_io.list_images(p)
      if not found:
        raise ImageError(f"{p}: folder holds no {'/'.join(EXTENSIONS)} images")
      files += found
    else:
      files.append(p)
  return files


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse

  from tqdm.auto import tqdm

  p = argparse.ArgumentParser(prog="nedenoise denoise", description=__doc__.split("\n\n")[0])
  p.add_argument("inputs", nargs="+", help="image files or folders (PNG, JPEG, BMP, TIFF)")
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
  p.add_argument("--tile", type=int, default=None, help="tile size (default: 512 above 1024x1024)")
  p.add_argument("--overlap", type=int, default=None, help="tile context (default: receptive radius)")
  p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (flips/rotations)")
  p.add_argument("--force", action="store_true", help="replace existing outputs (never an input)")
  args = p.parse_args(argv)
  if args.noise_map and args.sigma is not None:
    print("error: give --sigma (one level) or --noise_map (a per-pixel estimate), not both", file=sys.stderr)
    return 2
  try:
    files = _inputs(args.inputs)
    inputs = {os.path.realpath(f) for f in files}
    targets = []
    for f in files:
      out = os.path.join(args.out, os.path.basename(f))
      if os.path.realpath(out) in inputs:
        raise ImageError(f"{out} would overwrite the input {f}; choose another --out")
      if os.path.exists(out) and not args.force:
        raise ImageError(f"{out} exists; pass --force to replace it")
      targets.append(out)
    if len(set(targets)) != len(targets):
      raise ImageError("two inputs have the same file name; denoise them into different --out folders")
    loaded = {}
    failed = 0
    for f, out in tqdm(list(zip(files, targets)), desc="denoise", unit="img", dynamic_ncols=True):
      try:
        img = read_file(f)
        c = 1 if img.ndim == 2 else img.shape[-1]
        la = c == 2  # gray + alpha (PIL's LA): the alpha is kept as is
        color = img[..., :1] if la else img
        c = {2: 1, 4: 3}.get(c, c)
        key = (args.model, c)
        if key not in loaded:
          loaded[key] = resolve_model(args.model, c)
        res = denoise(color, loaded[key], args.noise_map or args.sigma, tile=args.tile,
                      overlap=args.overlap, ensemble=args.ensemble, progress=True,
                      map_scale=args.map_scale)
        write_file(out, np.concatenate([res, img[..., 1:]], axis=-1) if la else res)
      except ImageError as e:
        failed += 1
        tqdm.write(f"error: {e}" if str(e).startswith(f) else f"error: {f}: {e}", file=sys.stderr)
  except (ImageError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"denoised {len(files) - failed} of {len(files)} image(s) into {args.out}")
  return 1 if failed else 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
