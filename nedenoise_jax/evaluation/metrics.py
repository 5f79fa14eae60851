"""Image quality metrics (PSNR, SSIM, MS-SSIM) in jax, and the metric writers of a training run."""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import files


def psnr(x: jax.Array, ref: jax.Array, *, data_range: float = 1.0, clip: bool = True) -> jax.Array:
  """Peak signal-to-noise ratio per image, dB. ``x``, ``ref``: ``(N, H, W, C)``.

  ``x`` is clipped to ``[0, data_range]`` first (as the reference evaluations do).
  """
  if clip:
    x = jnp.clip(x, 0.0, data_range)
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - ref.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-20))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
  g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
  return jnp.asarray(g / g.sum(), jnp.float32)


def _ssim_cs(x: jax.Array, ref: jax.Array, data_range: float, size: int = 11, sigma: float = 1.5):
  """Per image and channel ``(N, C)``: the mean SSIM and the mean contrast-structure term
  over the valid region of a ``size x size`` Gaussian window (float32)."""
  g = _gaussian_window(size, sigma)
  c = x.shape[-1]

  def blur(a):
    a = jnp.transpose(a, (0, 3, 1, 2)).reshape(-1, a.shape[1], a.shape[2], 1)
    k = (g[:, None] * g[None, :])[:, :, None, None]
    out = jax.lax.conv_general_dilated(a, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out.reshape(-1, c, out.shape[1], out.shape[2])

  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  # (Co)variances from images centred on their own means (they do not change; the
  # float32 cancellation in E[x^2] - E[x]^2 does, by the size of the mean).
  cx = jnp.mean(x, axis=(1, 2), keepdims=True)
  cy = jnp.mean(ref, axis=(1, 2), keepdims=True)
  xc, yc = x - cx, ref - cy
  mxc, myc = blur(xc), blur(yc)
  sxx = blur(xc * xc) - mxc * mxc
  syy = blur(yc * yc) - myc * myc
  sxy = blur(xc * yc) - mxc * myc
  mx = mxc + jnp.transpose(cx, (0, 3, 1, 2))
  my = myc + jnp.transpose(cy, (0, 3, 1, 2))
  cs = (2 * sxy + c2) / (sxx + syy + c2)
  lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
  return jnp.mean(lum * cs, axis=(2, 3)), jnp.mean(cs, axis=(2, 3))


def ssim(x: jax.Array, ref: jax.Array, *, data_range: float = 1.0, clip: bool = True) -> jax.Array:
  """Structural similarity per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
  valid region), averaged over channels. ``(N, H, W, C)`` -> ``(N,)``.

  ``C1 = (0.01 * data_range)**2``, ``C2 = (0.03 * data_range)**2``. Images
  smaller than the window use a window of their own size.
  """
  if clip:
    x = jnp.clip(x, 0.0, data_range)
  x = x.astype(jnp.float32)
  ref = ref.astype(jnp.float32)
  size = min(11, x.shape[1], x.shape[2])
  s, _ = _ssim_cs(x, ref, data_range, size, 1.5 * size / 11)
  return jnp.mean(s, axis=1)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003


def _pool2(a: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2; an odd axis is zero-padded by one pixel on each side and
  the zeros counted (the convention of the pytorch_msssim reference)."""
  ph, pw = a.shape[1] % 2, a.shape[2] % 2
  if ph or pw:
    a = jnp.pad(a, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  n, h, w, c = a.shape
  a = a[:, :h // 2 * 2, :w // 2 * 2]
  return jnp.mean(a.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def ms_ssim(x: jax.Array, ref: jax.Array, *, data_range: float = 1.0, clip: bool = True,
            weights=MS_SSIM_WEIGHTS) -> jax.Array:
  """Multi-scale SSIM per image (Wang, Simoncelli & Bovik 2003). ``(N, H, W, C)`` -> ``(N,)``.

  At each of the ``len(weights)`` scales (5) the contrast-structure term, at
  the last the full SSIM, each with the 11x11 Gaussian window (sigma 1.5, valid
  region) and clipped at 0; between scales 2x2 average pooling.
  ``prod(cs_j ** w_j) * ssim_M ** w_M`` per channel, averaged over channels.
  The smaller side must exceed ``10 * 2**(scales - 1)`` pixels (160 for 5 scales).
  """
  levels = len(weights)
  need = (11 - 1) * 2 ** (levels - 1)
  if min(x.shape[1], x.shape[2]) <= need:
    raise ValueError(f"ms_ssim with {levels} scales needs images larger than {need} pixels on "
                     f"their smaller side, got shape {tuple(x.shape)}")
  if clip:
    x = jnp.clip(x, 0.0, data_range)
  x = x.astype(jnp.float32)
  ref = ref.astype(jnp.float32)
  w = jnp.asarray(weights, jnp.float32)
  terms = []
  for j in range(levels):
    s, cs = _ssim_cs(x, ref, data_range)
    if j < levels - 1:
      terms.append(jax.nn.relu(cs))
      x, ref = _pool2(x), _pool2(ref)
  terms.append(jax.nn.relu(s))
  per_channel = jnp.prod(jnp.stack(terms) ** w[:, None, None], axis=0)
  return jnp.mean(per_channel, axis=1)


class MetricWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard event files (tensorboardX, no TF).

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, start_step: Optional[int] = None):
    """``start_step``: the step a resumed run continues from. Rows (and TensorBoard events)
    after it, logged by the interrupted run and about to be logged again, are dropped; a
    metric already logged at a step up to it (a finished run's final validation, run again)
    is not logged twice."""
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    self._logged: set = set()  # (step, name) already in metrics.jsonl
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, "metrics.jsonl")
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          text = f.read()
        rows = _parse_rows(text, path)
        kept = [r for r in rows if start_step is None or r.get("step", 0) <= start_step]
        if len(kept) != len(rows) or (text and not text.endswith("\n")):  # replayed, or cut by a kill
          files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._logged = {(r.get("step"), k) for r in kept for k in r if k != "step"}
      self._jsonl = open(path, "a", buffering=1)
      try:
        from tensorboardX import SummaryWriter
        purge = {} if start_step is None else {"purge_step": start_step + 1}
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), **purge)
      except ImportError:  # optional: the JSONL file has everything
        self._tb = None

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    step = int(step)
    scalars = {k: float(v) for k, v in scalars.items() if (step, k) not in self._logged}
    if not scalars:
      return
    self._logged.update((step, k) for k in scalars)
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _parse_rows(text: str, path: str) -> list[dict]:
  """The JSON rows of a metrics.jsonl text; a last line cut by a killed run is dropped."""
  lines = [line for line in text.splitlines(keepends=True) if line.strip()]
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1 or line.endswith("\n"):
        raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
  return rows


def read_metrics(workdir: str) -> list[dict]:
  """The rows of ``metrics.jsonl``."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return _parse_rows(f.read(), path)
