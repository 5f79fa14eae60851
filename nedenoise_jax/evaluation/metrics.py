"""Image quality metrics (PSNR, SSIM) in jax, and the metric writers of a training run."""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np


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


def ssim(x: jax.Array, ref: jax.Array, *, data_range: float = 1.0, clip: bool = True) -> jax.Array:
  """Structural similarity per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
  valid region), averaged over channels. ``(N, H, W, C)`` -> ``(N,)``.

  Images smaller than the window use a window of their own size.
  """
  if clip:
    x = jnp.clip(x, 0.0, data_range)
  x = x.astype(jnp.float32)
  ref = ref.astype(jnp.float32)
  size = min(11, x.shape[1], x.shape[2])
  g = _gaussian_window(size, 1.5 * size / 11)
  c = x.shape[-1]

  def blur(a):
    a = jnp.transpose(a, (0, 3, 1, 2)).reshape(-1, a.shape[1], a.shape[2], 1)
    k = (g[:, None] * g[None, :])[:, :, None, None]
    out = jax.lax.conv_general_dilated(a, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out.reshape(-1, c, out.shape[1], out.shape[2])

  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  mx, my = blur(x), blur(ref)
  sxx = blur(x * x) - mx * mx
  syy = blur(ref * ref) - my * my
  sxy = blur(x * ref) - mx * my
  s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


class MetricWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard event files (tensorboardX, no TF).

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:  # optional: the JSONL file has everything
        self._tb = None

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """The rows of ``metrics.jsonl``."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
