"""Training losses: the reconstruction loss and CBDNet's losses on the estimated noise map.

All take NHWC arrays in the training data's units ([0, 1] images) and return
a scalar mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RECONSTRUCTION = ("mse", "l1")


def reconstruction(name: str, out: jax.Array, clean: jax.Array) -> jax.Array:
  """``mse``: mean squared error; ``l1``: mean absolute error."""
  err = out - clean
  if name == "mse":
    return jnp.mean(jnp.square(err))
  if name == "l1":
    return jnp.mean(jnp.abs(err))
  raise ValueError(f"config.train.loss={name!r}; expected one of {RECONSTRUCTION}")


def asymmetric(estimate: jax.Array, true: jax.Array, alpha: float = 0.3) -> jax.Array:
  """CBDNet's asymmetric loss, ``mean(|alpha - 1[estimate < true]| * (estimate - true)**2)``.

  With ``alpha < 0.5`` an under-estimated noise level (which leaves noise in
  the output) costs ``1 - alpha`` and an over-estimate (which only smooths
  more) ``alpha`` (Guo et al. 2019: ``alpha = 0.3``).
  """
  d = estimate - true
  weight = jnp.where(d < 0, 1.0 - alpha, alpha).astype(d.dtype)
  return jnp.mean(weight * jnp.square(d))


def total_variation(m: jax.Array) -> jax.Array:
  """Squared total variation of a map, ``mean(dh**2) + mean(dv**2)`` (smooth estimated maps)."""
  dv = m[:, 1:] - m[:, :-1]
  dh = m[:, :, 1:] - m[:, :, :-1]
  zero = jnp.zeros((), m.dtype)
  return (jnp.mean(jnp.square(dv)) if dv.size else zero) + (jnp.mean(jnp.square(dh)) if dh.size else zero)
