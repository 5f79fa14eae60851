"""Noise models: how noisy inputs are made, for training, evaluation and tests alike.

Additive white Gaussian noise of standard deviation ``sigma`` in the image's
units: ``y = x + sigma * n``, ``n ~ N(0, 1)`` i.i.d. Under ``x -> a*x + b``
(``a > 0``) the noisy image maps to ``a*y + b`` with ``sigma -> a*sigma``,
which is why an NE denoiser is called with ``a*sigma`` on ``a*y + b``.

Two generators of the same noise, each reproducible:

* :func:`add_gaussian` (JAX), inside a jitted training step, from
  ``fold_in(key, step)``;
* :func:`noisy_image` (NumPy, on the host), for evaluation: the noise of image
  ``index`` at ``sigma`` is drawn from
  ``numpy.random.default_rng([seed, round(100 * sigma), index])``, so every
  model, every run and training's validation see the same noisy images.
"""

from __future__ import annotations

import jax
import numpy as np


def add_gaussian(key: jax.Array, clean: jax.Array, sigma: jax.Array) -> jax.Array:
  """``clean + sigma * n`` for a batch ``(B, H, W, C)`` and per-example ``sigma`` ``(B,)`` (image units)."""
  return clean + sigma[:, None, None, None] * jax.random.normal(key, clean.shape, clean.dtype)


def noisy_image(clean: np.ndarray, sigma_255: float, index: int, seed: int = 0) -> np.ndarray:
  """The fixed noisy version of image ``index`` at ``sigma_255`` (0-255 scale; ``clean`` in [0, 1])."""
  rng = np.random.default_rng([seed, int(round(sigma_255 * 100)), index])
  return clean + np.float32(sigma_255 / 255.0) * rng.standard_normal(clean.shape, np.float32)
