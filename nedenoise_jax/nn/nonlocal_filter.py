"""Nonlocality-reinforced denoising (NN3D, Cruz, Foi, Katkovnik & Egiazarian 2018), in JAX.

``NN3D(inner=denoiser)`` iterates: the CNN's estimate ``x`` guides a nonlocal
filter of the *noisy* image ``y`` (patches matched on ``x``, weighted means of
``y``'s pixels, :func:`nonlocal_means`), the filtered image ``f`` is blended
with the input, ``z = lam*y + (1 - lam)*f``, and fed back to the CNN, for
``iterations`` rounds; the result is the CNN's last output.

The filter's weights are ``exp(-d2 / (h*sigma)**2)`` with ``d2`` the mean
squared difference of the guide's patches: distances normalized by the noise
level, and each pixel's weights normalized to sum to 1. Under
``y -> a*y + b`` an NE CNN's guide maps to ``a*x + b``, ``d2`` to ``a**2 * d2``,
``sigma`` to ``a*sigma``: the weights do not change, the filter maps to
``a*f + b``, and so does every iterate: **the whole scheme is NE** when its
CNN is (tested to 1e-12 in float64). ``sigma`` is the one given to a
non-blind CNN or, for a blind one, Donoho's estimate (:func:`mad_sigma`,
scale-equivariant and shift-invariant) unless given. With an ordinary CNN
the scheme is only as equivariant as that CNN.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from nedenoise_jax.nn.models import AroundInner


def mad_sigma(x: jax.Array) -> jax.Array:
  """Donoho's noise estimate per image, ``(N,)``: median |finest diagonal Haar detail| / 0.6745,
  averaged over channels (:func:`nedenoise_jax.noise.estimate_sigma` in JAX)."""
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  if h < 2 or w < 2:
    raise ValueError(f"NN3D needs images of at least 2x2 pixels to estimate sigma, got shape {x.shape}")
  v = x[:, :h, :w]
  hh = (v[:, 0::2, 0::2] - v[:, 0::2, 1::2] - v[:, 1::2, 0::2] + v[:, 1::2, 1::2]) / 2
  med = jnp.median(jnp.abs(hh).reshape(x.shape[0], -1, x.shape[-1]), axis=1)
  return jnp.mean(med, axis=-1) / 0.6745


def nonlocal_means(y: jax.Array, guide: jax.Array, sigma: jax.Array, *, search: int = 5,
                   patch: int = 2, h: float = 0.45) -> jax.Array:
  """Guided nonlocal means: ``sum_q w(p, q) y(q) / sum_q w(p, q)`` over a ``(2*search+1)**2``
  window, ``w = exp(-d2(p, q) / (h*sigma)**2)`` with ``d2`` the mean squared difference of the
  ``(2*patch+1)**2`` patches of ``guide`` around ``p`` and ``q`` (channels averaged).

  ``y``, ``guide``: ``(N, H, W, C)``; ``sigma``: ``(N,)`` or a map ``(N, H, W, 1)`` (each
  pixel's weights use its own level), in their units. Borders repeat the edge pixels.
  Where ``sigma`` is 0 the pixel of ``y`` is returned.
  """
  n, hgt, wid, c = y.shape
  pad = search + patch
  gp = jnp.pad(guide, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  yp = jnp.pad(y, ((0, 0), (search, search), (search, search), (0, 0)), mode="edge")
  ref = jax.lax.dynamic_slice(gp, (0, search, search, 0), (n, hgt + 2 * patch, wid + 2 * patch, c))
  s = jnp.asarray(sigma, y.dtype)
  s = s.reshape(n, 1, 1) if s.ndim <= 1 else s.reshape(n, hgt, wid)
  positive = s > 0
  h2 = jnp.where(positive, jnp.square(h * s), jnp.ones_like(s))
  k = 2 * patch + 1
  offsets = jnp.asarray([(dy, dx) for dy in range(-search, search + 1) for dx in range(-search, search + 1)],
                        jnp.int32)

  def body(carry, off):
    num, den = carry
    dy, dx = off[0], off[1]
    zero = jnp.zeros((), jnp.int32)
    shifted = jax.lax.dynamic_slice(gp, (zero, search + dy, search + dx, zero),
                                    (n, hgt + 2 * patch, wid + 2 * patch, c))
    d = jnp.mean(jnp.square(shifted - ref), axis=-1)
    d2 = jax.lax.reduce_window(d, 0.0, jax.lax.add, (1, k, k), (1, 1, 1), "VALID") / (k * k)
    centre = (dy == 0) & (dx == 0)
    w = jnp.where(positive, jnp.exp(-d2 / h2), jnp.where(centre, 1.0, 0.0).astype(y.dtype))
    ys = jax.lax.dynamic_slice(yp, (zero, search + dy, search + dx, zero), (n, hgt, wid, c))
    return (num + w[..., None] * ys, den + w), None

  init = (jnp.zeros_like(y), jnp.zeros((n, hgt, wid), y.dtype))
  (num, den), _ = jax.lax.scan(body, init, offsets)
  return num / den[..., None]


class NN3D(AroundInner, nn.Module):
  """``iterations`` rounds of CNN -> guided nonlocal filter -> blend with the input -> CNN.

  ``inner``: any denoiser of :func:`models.create` (its parameters live under
  ``"inner"``: ``{"params": {"inner": params}}``). Called like it:
  ``apply(variables, y, sigma)``, ``sigma`` a scalar, ``(N,)`` or a per-pixel
  map ``(N, H, W, 1)``; for a blind ``inner``, ``sigma`` (optional) only sets
  the filter's level, else it is estimated. A non-blind ``inner`` gets
  ``lam * sigma`` for the blended images (the filtered part is nearly
  noise-free). ``iterations = 0`` is the plain CNN.
  """

  inner: nn.Module
  # lam and h chosen on 3 Set12 images with the shipped NE model (sigma 25 and 50,
  # one iteration; lam in 0.2-0.7, h in 0.25-0.7): lam = 0.5, h = 0.45 were best.
  iterations: int = 1
  lam: float = 0.5
  search: int = 5
  patch: int = 2
  h: float = 0.45

  @nn.compact
  def __call__(self, y: jax.Array, sigma=None, *, train: bool = False) -> jax.Array:
    n, h, w, _ = y.shape
    if sigma is None:
      if not self.inner.blind:
        raise ValueError("NN3D around a non-blind denoiser: pass sigma (a scalar, (N,) or (N, H, W, 1))")
      level = mad_sigma(y)
    else:
      s_arr = jnp.asarray(sigma, y.dtype)
      if s_arr.ndim == 0 or s_arr.shape == (n,):
        level = jnp.broadcast_to(s_arr, (n,))
      elif s_arr.shape in ((n, 1, 1, 1), (n, h, w, 1)):
        level = jnp.broadcast_to(s_arr, (n, h, w, 1))
      else:
        raise ValueError(f"NN3D: sigma has shape {s_arr.shape}; for images of shape {y.shape} expected "
                         f"a scalar, ({n},), ({n}, 1, 1, 1) or ({n}, {h}, {w}, 1)")
    if self.inner.blind:
      cnn = lambda z, s: self.inner(z, None, train=train)  # noqa: E731
    else:
      cnn = lambda z, s: self.inner(z, s, train=train)  # noqa: E731
    x = cnn(y, level)
    for _ in range(self.iterations):
      f = nonlocal_means(y, x, level, search=self.search, patch=self.patch, h=self.h)
      z = self.lam * y + (1 - self.lam) * f
      x = cnn(z, self.lam * level)
    return x.astype(y.dtype)


def wrap(module: nn.Module, variables, **kwargs) -> tuple[nn.Module, dict]:
  """``(NN3D(inner=module, **kwargs), variables)`` for an existing ``(module, variables)``."""
  nested = {k: {"inner": v} for k, v in variables.items()}
  return NN3D(inner=module, **kwargs), nested


__all__ = ["NN3D", "mad_sigma", "nonlocal_means", "wrap"]
