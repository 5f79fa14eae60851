"""Noise models: how noisy inputs and their noise-level maps are made, for training,
evaluation and tests alike, and the classical noise estimators.

Every model draws, for a clean image ``x`` (``(H, W, C)``, values in [0, 1]),
a noisy image ``y`` and the per-pixel noise standard deviation map ``m``
(``(H, W, 1)``, in the image's units) that a non-blind network receives:

``gaussian``
    ``y = x + sigma * n``, ``n ~ N(0, 1)`` i.i.d., one ``sigma`` per image
    (uniform in ``[sigma_min, sigma_max]``, 0-255 scale); ``m = sigma``.
``gaussian_map``
    Spatially variant Gaussian noise, ``y = x + m * n``, with ``m`` a smooth
    random map (:data:`PATTERNS`: constant, a linear gradient in a random
    direction, a low-frequency random field, or piecewise constant Voronoi
    regions) between two levels drawn in ``[sigma_min, sigma_max]``.
``poisson_gaussian``
    Signal-dependent noise of variance ``a*x + b``: ``y = a*P(x/a) + sqrt(b)*n``
    with ``P`` a Poisson draw (exact, not the Gaussian approximation); ``a``
    in ``[a_min, a_max]``, ``b`` in ``[b_min, b_max]`` ([0, 1] units: ``a`` is
    the gain, ``b`` a variance). ``m = sqrt(a*mean_c(x) + b)`` (one map for
    all channels: the root mean variance over channels).
``camera``
    A CBDNet-style in-camera pipeline (Guo et al. 2019), simplified: the image
    is taken back to linear intensities by the inverse of a gamma camera
    response ``L = x**gamma``, optionally mosaicked on an RGGB Bayer pattern
    (colour images), Poisson-Gaussian noise of variance ``a*L + b`` is added,
    the mosaic is demosaicked bilinearly, the response ``y = clip(L, 0, 1)**(1/gamma)``
    applied, and the result optionally JPEG-compressed (quality ``jpeg_quality``,
    8 bits). ``m`` is the standard deviation of the output at each pixel's
    linear intensity without mosaic and JPEG, computed exactly
    (:func:`camera_std_table`: the Poisson sum, the read noise by quadrature,
    the clipping and the response), root mean square over channels; it
    ignores what demosaicking (which averages neighbours) and JPEG do. Left out: CBDNet's 201 measured response curves
    (one gamma here), white balance and colour-space conversion, and the
    tone mapping of real cameras.

Under ``x -> s*x + t`` (``s > 0``) a Gaussian noisy image maps to ``s*y + t``
with ``m -> s*m``: an NE denoiser ``f(s*y + t, s*m) = s*f(y, m) + t`` then
gives the same estimate in the new units, whatever they are. For Poisson-Gaussian
noise ``s*y + t`` is again Poisson-Gaussian noise, of parameters
``(s*a, s**2*b - s*a*t)`` around ``s*x + t``, and its map is ``s*m``: the
same guarantee holds, the parameters are only expressed in other units (16-bit
counts, an offset, ...). The camera pipeline is not affine in ``x`` (the
response is applied to absolute intensities), so a rescaled camera image is not
the pipeline's output at another exposure; NE still means that the denoiser
treats the rescaled image (with its map scaled by ``s``) exactly as the
original. A blind NE model needs no map at all; a blind estimator must satisfy
``m(s*y + t) = s*m(y)`` (:func:`estimate_noise_map`, CBDNet's NE estimator).

Reproducibility: training draws example ``i`` from
``numpy.random.default_rng([seed, i])`` (:mod:`nedenoise_jax.data.pipeline`),
evaluation image ``i`` at level ``sigma`` from
``default_rng([seed, round(100 * sigma), i])`` (``gaussian``, as before) or
``default_rng([seed, kind id, round(100 * sigma), i])`` (the others): the same
noisy images for every model, run and device count. The Gaussian noise of a
training step is drawn inside the jitted step (:func:`add_gaussian`, from
``fold_in(key, step)``); the other kinds on the host.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields, replace

import jax
import numpy as np

KINDS = ("gaussian", "gaussian_map", "poisson_gaussian", "camera")
PATTERNS = ("constant", "gradient", "lowfreq", "piecewise")
_KIND_ID = {k: i for i, k in enumerate(KINDS)}


def add_gaussian(key: jax.Array, clean: jax.Array, sigma: jax.Array) -> jax.Array:
  """``clean + sigma * n`` for a batch ``(B, H, W, C)`` and per-example ``sigma`` ``(B,)`` (image units)."""
  return clean + sigma[:, None, None, None] * jax.random.normal(key, clean.shape, clean.dtype)


def noisy_image(clean: np.ndarray, sigma_255: float, index: int, seed: int = 0) -> np.ndarray:
  """The fixed Gaussian noisy version of image ``index`` at ``sigma_255`` (0-255 scale; ``clean`` in [0, 1])."""
  rng = np.random.default_rng([seed, int(round(sigma_255 * 100)), index])
  return clean + np.float32(sigma_255 / 255.0) * rng.standard_normal(clean.shape, np.float32)


# --------------------------------------------------------------------------- maps


def map_pattern(rng: np.random.Generator, shape: tuple[int, int], pattern: str) -> np.ndarray:
  """A smooth random field ``(H, W)`` with values in [0, 1] (0 everywhere for ``constant``)."""
  h, w = shape
  yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
  if pattern == "constant":
    return np.zeros((h, w))
  if pattern == "gradient":
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * xx + np.sin(theta) * yy
  elif pattern == "lowfreq":  # a few random cosines of at most 2 cycles across the image
    t = np.zeros((h, w))
    for _ in range(4):
      fy, fx = rng.uniform(-2.0, 2.0, size=2)
      t += rng.normal() * np.cos(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
  elif pattern == "piecewise":  # Voronoi regions of random seeds, each at its own level
    k = int(rng.integers(2, 7))
    seeds, levels = rng.uniform(size=(k, 2)), rng.uniform(size=k)
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return levels[np.argmin(d, axis=-1)]
  else:
    raise ValueError(f"unknown noise-map pattern {pattern!r}; expected one of {PATTERNS}")
  lo, hi = t.min(), t.max()
  return (t - lo) / (hi - lo) if hi > lo else np.zeros((h, w))


# --------------------------------------------------------------------------- camera pipeline


def bayer_mask(shape: tuple[int, int]) -> np.ndarray:
  """``(H, W, 3)`` booleans: which colour an RGGB Bayer sensor measures at each pixel."""
  h, w = shape
  m = np.zeros((h, w, 3), bool)
  m[0::2, 0::2, 0] = True
  m[0::2, 1::2, 1] = True
  m[1::2, 0::2, 1] = True
  m[1::2, 1::2, 2] = True
  return m


def demosaic_bilinear(mosaic: np.ndarray) -> np.ndarray:
  """Bilinear demosaicking of an RGGB mosaic ``(H, W)`` into ``(H, W, 3)``.

  Each colour is the normalized 3x3 weighted average of the pixels that measured
  it (weights 1, 2, 4 by distance), so measured values are kept as they are.
  """
  h, w = mosaic.shape
  mask = bayer_mask((h, w)).astype(np.float64)
  k = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])

  def blur(a):
    p = np.pad(a, 1, mode="reflect") if min(h, w) > 1 else np.pad(a, 1, mode="edge")
    return sum(k[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))

  out = np.empty((h, w, 3))
  for c in range(3):
    num, den = blur(mosaic * mask[..., c]), blur(mask[..., c])
    out[..., c] = np.where(mask[..., c] > 0, mosaic, num / np.maximum(den, 1e-12))
  return out


_HERMITE = np.polynomial.hermite.hermgauss(24)


def camera_std_table(a: float, b: float, gamma: float, points: int = 129) -> tuple[np.ndarray, np.ndarray]:
  """``(L, std)``: the standard deviation of ``clip(a*P(L/a) + sqrt(b)*n, 0, 1)**(1/gamma)``
  on a grid of linear intensities ``L`` in [0, 1], computed exactly (the Poisson sum,
  and Gauss-Hermite quadrature over the read noise); above 200 expected counts the
  Poisson part is taken as Gaussian of variance ``a*L``."""
  x, w = _HERMITE
  w = w / np.sqrt(np.pi)
  grid = np.linspace(0.0, 1.0, points)
  if a == 0 and b == 0:
    return grid, np.zeros(points)
  out = np.empty(points)
  crf = lambda v: np.clip(v, 0.0, 1.0) ** (1.0 / gamma)  # noqa: E731
  for i, lin in enumerate(grid):
    lam = lin / a if a > 0 else np.inf
    if lam > 200:  # values around L of variance a*L + b
      vals = lin + np.sqrt(a * lin + b) * np.sqrt(2.0) * x
      probs = w
    else:
      kmax = int(lam + 10 * np.sqrt(lam) + 10)
      k = np.arange(kmax + 1)
      logp = k * np.log(max(lam, 1e-300)) - lam - np.cumsum(np.log(np.maximum(k, 1)))
      pk = np.exp(logp) if lam > 0 else (k == 0).astype(float)
      vals = (a * k[:, None] + np.sqrt(b) * np.sqrt(2.0) * x[None, :]).ravel()
      probs = (pk[:, None] * w[None, :]).ravel()
    g = crf(vals)
    mean = np.sum(probs * g) / np.sum(probs)
    out[i] = np.sqrt(max(np.sum(probs * (g - mean) ** 2) / np.sum(probs), 0.0))
  return grid, out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """``image`` in [0, 1] (``(H, W, C)``, C = 1 or 3) through 8-bit JPEG at ``quality``."""
  from PIL import Image

  u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(buf, format="JPEG", quality=int(quality))
  buf.seek(0)
  out = np.asarray(Image.open(buf), np.float64) / 255.0
  return out.reshape(image.shape)


# --------------------------------------------------------------------------- the models


@dataclass(frozen=True)
class NoiseModel:
  """A noise model with its parameter ranges (see the module docstring).

  ``sigma_min``/``sigma_max`` are on the 0-255 scale; ``a``/``b`` and the
  images on [0, 1]. Build from a config with :func:`from_config`.
  """

  kind: str = "gaussian"
  sigma_min: float = 0.0
  sigma_max: float = 50.0
  patterns: tuple[str, ...] = PATTERNS
  a_min: float = 0.0
  a_max: float = 0.02
  b_min: float = 0.0
  b_max: float = 0.01
  gamma: float = 2.2
  demosaic: bool = False
  jpeg_quality: int = 0  # 0: no JPEG

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"config.noise.kind={self.kind!r}; expected one of {KINDS}")
    for lo, hi in (("sigma_min", "sigma_max"), ("a_min", "a_max"), ("b_min", "b_max")):
      vlo, vhi = getattr(self, lo), getattr(self, hi)
      if not (np.isfinite(vlo) and np.isfinite(vhi) and 0 <= vlo <= vhi):
        raise ValueError(f"config.noise.{lo}={vlo}, config.noise.{hi}={vhi}: expected "
                         f"0 <= {lo} <= {hi}")
    bad = [p for p in self.patterns if p not in PATTERNS]
    if bad or not self.patterns:
      raise ValueError(f"config.noise.patterns={','.join(self.patterns)!r}: expected a comma-separated "
                       f"subset of {','.join(PATTERNS)}")
    if not self.gamma > 0:
      raise ValueError(f"config.noise.gamma={self.gamma}: expected > 0")
    if not 0 <= self.jpeg_quality <= 100:
      raise ValueError(f"config.noise.jpeg_quality={self.jpeg_quality}: expected 0 (off) to 100")

  # -- parameters ------------------------------------------------------------------------------

  def at_level(self, sigma_255: float) -> "NoiseModel":
    """This model with its parameters fixed by one level ``sigma_255`` (evaluation sweeps).

    ``gaussian``: ``sigma``; ``gaussian_map``: maps between ``sigma/2`` and
    ``3*sigma/2``; ``poisson_gaussian``/``camera``: the standard deviation at
    intensity 0.5 is ``sigma``, half of the variance signal-dependent
    (``a = s**2``, ``b = s**2/2`` with ``s = sigma/255``).
    """
    s = float(sigma_255)
    if self.kind == "gaussian":
      return replace(self, sigma_min=s, sigma_max=s)
    if self.kind == "gaussian_map":
      return replace(self, sigma_min=0.5 * s, sigma_max=1.5 * s)
    v = (s / 255.0) ** 2
    return replace(self, a_min=v, a_max=v, b_min=v / 2, b_max=v / 2)

  # -- drawing ---------------------------------------------------------------------------------

  def sample(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, map)`` for ``clean`` ``(H, W, C)`` in [0, 1]: float32 ``(H, W, C)`` and ``(H, W, 1)``."""
    x = np.asarray(clean, np.float64)
    if x.ndim != 3:
      raise ValueError(f"noise models take (H, W, C) images, got shape {x.shape}")
    h, w, c = x.shape
    if self.kind == "gaussian":
      s = rng.uniform(self.sigma_min, self.sigma_max) / 255.0
      m = np.full((h, w, 1), s)
      y = x + s * rng.standard_normal(x.shape)
    elif self.kind == "gaussian_map":
      lo, hi = np.sort(rng.uniform(self.sigma_min, self.sigma_max, size=2)) / 255.0
      pattern = self.patterns[int(rng.integers(len(self.patterns)))]
      t = map_pattern(rng, (h, w), pattern)
      if rng.integers(2):  # either end of the pattern may be the noisier one
        lo, hi = hi, lo
      m = (lo + (hi - lo) * t)[..., None]
      y = x + m * rng.standard_normal(x.shape)
    elif self.kind == "poisson_gaussian":
      a, b = rng.uniform(self.a_min, self.a_max), rng.uniform(self.b_min, self.b_max)
      y = _poisson_gaussian(rng, x, a, b)
      m = np.sqrt(a * np.mean(np.clip(x, 0, None), axis=-1, keepdims=True) + b)
    else:
      y, m = self._camera(x, rng)
    return y.astype(np.float32), m.astype(np.float32)

  def _camera(self, x: np.ndarray, rng: np.random.Generator):
    a, b = rng.uniform(self.a_min, self.a_max), rng.uniform(self.b_min, self.b_max)
    g = self.gamma
    lin = np.clip(x, 0.0, 1.0) ** g
    mosaic = self.demosaic and x.shape[-1] == 3
    if mosaic:
      raw = np.sum(lin * bayer_mask(x.shape[:2]), axis=-1)
      noisy_lin = demosaic_bilinear(_poisson_gaussian(rng, raw, a, b))
    else:
      noisy_lin = _poisson_gaussian(rng, lin, a, b)
    y = np.clip(noisy_lin, 0.0, 1.0) ** (1.0 / g)
    if self.jpeg_quality:
      y = jpeg(y, self.jpeg_quality)
    per_channel = np.interp(lin, *camera_std_table(a, b, g))
    m = np.sqrt(np.mean(per_channel ** 2, axis=-1, keepdims=True))
    return y, m

  def noisy(self, clean: np.ndarray, sigma_255: float, index: int, seed: int = 0):
    """The fixed ``(noisy, map)`` of evaluation image ``index`` at level ``sigma_255`` (see :meth:`at_level`).

    ``clean``: ``(H, W, C)`` or ``(1, H, W, C)``; the outputs have its leading axes.
    """
    batch = clean.ndim == 4
    img = clean[0] if batch else clean
    if self.kind == "gaussian":
      y = noisy_image(img, sigma_255, index, seed)
      m = np.full(img.shape[:2] + (1,), sigma_255 / 255.0, np.float32)
    else:
      rng = np.random.default_rng([seed, _KIND_ID[self.kind], int(round(sigma_255 * 100)), index])
      y, m = self.at_level(sigma_255).sample(img, rng)
    return (y[None], m[None]) if batch else (y, m)


def _poisson_gaussian(rng: np.random.Generator, x: np.ndarray, a: float, b: float) -> np.ndarray:
  """``a * Poisson(x / a) + sqrt(b) * n`` (``x`` clipped at 0 for the Poisson part)."""
  pos = np.clip(x, 0.0, None)
  y = a * rng.poisson(pos / a) if a > 0 else pos.copy()
  return y + np.sqrt(b) * rng.standard_normal(x.shape)


def from_config(noise_config) -> NoiseModel:
  """The :class:`NoiseModel` of a config's ``noise`` section (a ConfigDict or dict)."""
  cfg = dict(noise_config)
  kw = {}
  for f in fields(NoiseModel):
    if f.name in cfg:
      v = cfg[f.name]
      if f.name == "patterns":
        v = tuple(p.strip() for p in v.split(",") if p.strip()) if isinstance(v, str) else tuple(v)
      kw[f.name] = v
  return NoiseModel(**kw)


# --------------------------------------------------------------------------- estimation


def _haar_hh(x: np.ndarray) -> np.ndarray:
  """Finest diagonal Haar details of ``(H, W, C)`` on 2x2 blocks: ``(H//2, W//2, C)``.

  For i.i.d. noise of standard deviation ``s`` they have standard deviation ``s``;
  smooth image content cancels. Scale-equivariant and shift-invariant.
  """
  h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
  x = x[:h, :w]
  return (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0


def estimate_sigma(image: np.ndarray) -> float:
  """Noise standard deviation of ``image`` (``HW`` or ``HWC``), in its own units.

  Donoho's wavelet estimator: the median absolute value of the finest diagonal
  Haar detail coefficients divided by 0.6745, averaged over channels.
  """
  x = np.asarray(image, np.float64)
  if x.ndim == 2:
    x = x[:, :, None]
  if x.shape[0] < 2 or x.shape[1] < 2:
    raise ValueError(f"cannot estimate the noise of an image of shape {np.shape(image)}; give sigma")
  hh = _haar_hh(x)
  return float(np.mean([np.median(np.abs(hh[..., c])) / 0.6745 for c in range(x.shape[-1])]))


ESTIMATORS = ("global", "local", "poisson_gaussian")


def _upsample(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear interpolation of a coarse ``(gh, gw)`` grid of cell centres to ``shape``."""
  gh, gw = grid.shape
  h, w = shape
  ys = np.clip((np.arange(h) + 0.5) / h * gh - 0.5, 0, gh - 1)
  xs = np.clip((np.arange(w) + 0.5) / w * gw - 0.5, 0, gw - 1)
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
  fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
  top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
  bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
  return top * (1 - fy) + bottom * fy


def classical_noise_map(image: np.ndarray, *, method: str = "local", window: int = 32) -> np.ndarray:
  """A per-pixel noise standard deviation map ``(H, W, 1)`` of ``image`` (``(H, W, C)``), in its units.

  ``global``: :func:`estimate_sigma` everywhere. ``local``: the same
  estimator on cells of ``window x window`` pixels, interpolated bilinearly
  (spatially variant noise). ``poisson_gaussian``: fits the noise-level
  function ``var = a*mean + b`` by least squares to the cells' (local mean,
  robust variance) pairs and evaluates it on the image smoothed by the cells
  (signal-dependent noise, after Foi et al. 2008; negative variances clip to
  0). Each is scale-equivariant and shift-invariant, ``m(s*x + t) = s*m(x)``
  (up to rounding), so it may feed an NE denoiser.
  """
  if method not in ESTIMATORS:
    raise ValueError(f"unknown noise estimator {method!r}; expected one of {ESTIMATORS}")
  x = np.asarray(image, np.float64)
  if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 2:
    raise ValueError(f"cannot estimate the noise map of an image of shape {np.shape(image)}; "
                     "expected (H, W, C) with H, W >= 2")
  h, w = x.shape[:2]
  if method == "global":
    return np.full((h, w, 1), estimate_sigma(x))
  if window < 4:
    raise ValueError(f"window={window}: expected at least 4 pixels")
  hh = np.abs(_haar_hh(x))  # (h//2, w//2, C)
  cell = window // 2
  gh, gw = max(1, hh.shape[0] // cell), max(1, hh.shape[1] // cell)
  ys = np.linspace(0, hh.shape[0], gh + 1).astype(int)
  xs = np.linspace(0, hh.shape[1], gw + 1).astype(int)
  sd = np.empty((gh, gw))
  mean = np.empty((gh, gw))
  for i in range(gh):
    for j in range(gw):
      block = hh[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
      sd[i, j] = np.mean(np.median(block.reshape(-1, block.shape[-1]), axis=0)) / 0.6745
      mean[i, j] = np.mean(x[2 * ys[i]:2 * ys[i + 1], 2 * xs[j]:2 * xs[j + 1]])
  if method == "local":
    return _upsample(sd, (h, w))[..., None]
  a, b = _fit_nlf(mean.ravel(), sd.ravel() ** 2)
  level = _upsample(mean, (h, w))
  return np.sqrt(np.clip(a * level + b, 0.0, None))[..., None]


def _fit_nlf(mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
  """Least-squares ``var = a*mean + b`` (unconstrained, so the fit transforms exactly under
  ``x -> s*x + t``; the caller clips the variance at 0). A single intensity: ``a = 0``."""
  centred = mean - mean.mean()
  denom = float(np.sum(centred ** 2))
  if denom <= 1e-12 * max(1.0, float(np.sum(mean ** 2))):
    return 0.0, float(np.mean(var))
  a = float(np.sum(centred * (var - var.mean())) / denom)
  return a, float(var.mean() - a * mean.mean())


__all__ = ["ESTIMATORS", "KINDS", "NoiseModel", "PATTERNS", "add_gaussian", "bayer_mask",
           "classical_noise_map", "demosaic_bilinear", "estimate_sigma", "from_config", "jpeg",
           "map_pattern", "noisy_image"]
