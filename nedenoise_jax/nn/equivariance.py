"""Checks of scale and normalization equivariance for any denoising function.

``fn`` is any callable ``fn(x)`` (blind) or ``fn(x, sigma)`` (non-blind) on
arrays. For each ``(a, b)`` the checks compare ``fn(a*x + b, a*sigma)`` with
``a*fn(x, sigma) + b`` and fail (``AssertionError``, via chex) when any
element differs by more than ``atol + rtol * max|a*fn(x, sigma) + b|``, a
tolerance relative to the magnitude of the output.

Example::

    from nedenoise_jax import equivariance, models
    module = models.create("fdncnn", mode="norm_equiv", blind=True, depth=4, features=8)
    variables = module.init(jax.random.key(0), x)
    equivariance.assert_normalization_equivariant(
        lambda x: module.apply(variables, x), x, rtol=1e-5)
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_PAIRS = ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3))
DEFAULT_SCALES = (10.0, 0.3, 1.7)


def _call(fn: Callable, x, sigma):
  return fn(x) if sigma is None else fn(x, sigma)


def _transformed(fn: Callable, x, sigma, pairs):
  """Yields ``(a, b, fn(a*x + b, a*sigma), a*fn(x, sigma) + b)`` for each pair."""
  x = jnp.asarray(x)
  y = _call(fn, x, sigma)
  chex.assert_shape(y, x.shape)
  for a, b in pairs:
    if a <= 0:
      raise ValueError(f"equivariance is defined for a > 0, got a={a}")
    a_ = jnp.asarray(a, x.dtype)
    b_ = jnp.asarray(b, x.dtype)
    s = None if sigma is None else a_ * jnp.asarray(sigma, x.dtype)
    yield a, b, _call(fn, a_ * x + b_, s), a_ * y + b_


def equivariance_errors(fn: Callable, x, sigma=None, *,
                        pairs: Sequence[tuple[float, float]] = DEFAULT_PAIRS) -> list[dict]:
  """For each ``(a, b)``: the largest absolute error and the output magnitude.

  Returns a list of dicts ``{"a", "b", "max_abs_error", "magnitude",
  "rel_error"}``, where ``rel_error = max_abs_error / magnitude``.
  """
  rows = []
  for a, b, got, want in _transformed(fn, x, sigma, pairs):
    err = float(jnp.max(jnp.abs(got - want)))
    mag = float(jnp.max(jnp.abs(want)))
    rows.append({"a": float(a), "b": float(b), "max_abs_error": err, "magnitude": mag,
                 "rel_error": err / mag if mag else err})
  return rows


def _assert(fn, x, sigma, pairs, rtol, atol, what):
  for a, b, got, want in _transformed(fn, x, sigma, pairs):
    tol = atol + rtol * float(jnp.max(jnp.abs(want)))
    try:
      chex.assert_trees_all_close(got, want, rtol=0.0, atol=tol)
    except AssertionError as e:
      err = float(jnp.max(jnp.abs(got - want)))
      raise AssertionError(
          f"not {what} for a={a}, b={b}: max |f(a*x+b) - (a*f(x)+b)| = {err:.3e} > "
          f"tolerance {tol:.3e} (atol={atol}, rtol={rtol} x output magnitude); dtype "
          f"{got.dtype}, shape {got.shape}\n{e}") from None


def assert_normalization_equivariant(fn: Callable, x, sigma=None, *, rtol: float = 1e-5,
                                     atol: float = 0.0,
                                     pairs: Sequence[tuple[float, float]] = DEFAULT_PAIRS) -> None:
  """Asserts ``fn(a*x + b, a*sigma) == a*fn(x, sigma) + b`` for each ``(a, b)`` in ``pairs``.

  Args:
    fn: ``fn(x)`` if ``sigma`` is None, else ``fn(x, sigma)``.
    x: input images, e.g. ``(N, H, W, C)``.
    sigma: noise level (scaled by ``a``, never shifted) or None.
    rtol: tolerance relative to ``max|a*fn(x) + b|``.
    atol: absolute tolerance added to it.
    pairs: ``(a, b)`` with ``a > 0``.
  """
  _assert(fn, x, sigma, pairs, rtol, atol, "normalization-equivariant")


def assert_scale_equivariant(fn: Callable, x, sigma=None, *, rtol: float = 1e-5, atol: float = 0.0,
                             scales: Sequence[float] = DEFAULT_SCALES) -> None:
  """Asserts ``fn(a*x, a*sigma) == a*fn(x, sigma)`` for each ``a`` in ``scales``."""
  _assert(fn, x, sigma, [(a, 0.0) for a in scales], rtol, atol, "scale-equivariant")


def assert_shift_equivariant(fn: Callable, x, sigma=None, *, rtol: float = 1e-5, atol: float = 0.0,
                             shifts: Sequence[float] = (50.0, -1.2, 0.3)) -> None:
  """Asserts ``fn(x + b, sigma) == fn(x, sigma) + b`` for each ``b`` in ``shifts``."""
  _assert(fn, x, sigma, [(1.0, b) for b in shifts], rtol, atol, "shift-equivariant")


def random_variables(module, x, sigma=None, *, seed: int = 0):
  """Random variables of a sane scale for ``module`` (a flax module), drawn with numpy.

  Every leaf is random, including biases, residual ``alpha``s and BatchNorm
  statistics: a freshly initialized network has zero biases, which would make
  an ``ordinary`` network scale-equivariant by accident and hide failures.
  Kernels get variance ``1/fan_in``. Nothing is compiled, so this is much
  faster than ``module.init`` on a CPU.
  """
  abstract = jax.eval_shape(module.init, jax.random.key(0), x, sigma)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    shape = leaf.shape
    if name == "kernel":
      v = rng.normal(size=shape) / np.sqrt(max(1, int(np.prod(shape[:-1]))))
    elif name == "alpha":
      v = 0.5 + 0.1 * rng.normal(size=shape)
    elif name in ("scale", "var"):  # BatchNorm gamma and running variance stay positive
      v = 1.0 + 0.2 * rng.uniform(size=shape)
    else:  # biases, running means
      v = 0.1 * rng.normal(size=shape)
    return jnp.asarray(v, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def max_relative_error(fn: Callable, x, sigma=None, *,
                       pairs: Sequence[tuple[float, float]] = DEFAULT_PAIRS) -> float:
  """Worst ``rel_error`` of :func:`equivariance_errors` (for reports)."""
  return max(r["rel_error"] for r in equivariance_errors(fn, x, sigma, pairs=pairs))


__all__ = ["DEFAULT_PAIRS", "DEFAULT_SCALES", "assert_normalization_equivariant",
           "assert_scale_equivariant", "assert_shift_equivariant", "equivariance_errors",
           "max_relative_error", "random_variables"]
