"""Equivariance of every architecture x mode x blind/non-blind x gray/colour.

Tolerances (issue 2): float64 <= 1e-10 absolute; float32 <= 1e-5 relative to
the output's magnitude. `ordinary` must fail both checks, which shows that the
checks can fail.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import equivariance, models

ARCHS = ("fdncnn", "drunet", "dncnn")
PAIRS = ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3))
SCALES = (10.0, 0.3, 1.7)


def _tol(dtype):
  return dict(atol=1e-10, rtol=0.0) if dtype == jnp.float64 else dict(atol=0.0, rtol=1e-5)


def _setup(arch, mode, blind, channels, shape, dtype, tiny_kwargs, random_variables, seed=0):
  module = models.create(arch, mode=mode, blind=blind, channels=channels, **tiny_kwargs[arch])
  rng = np.random.default_rng(seed)
  n, h, w = shape
  x = jnp.asarray(rng.uniform(size=(n, h, w, channels)), dtype)
  sigma = None if blind else jnp.asarray(rng.uniform(0.02, 0.2, size=(n,)), dtype)
  variables = random_variables(module, x, sigma, seed)
  fn = jax.jit(lambda x, s=None: module.apply(variables, x, s))
  return fn, x, sigma


@pytest.mark.parametrize("arch,mode,blind,channels", list(itertools.product(
    ARCHS, ("norm_equiv", "wrapped"), (True, False), (1, 3))))
def test_normalization_equivariant(arch, mode, blind, channels, dtype, tiny_kwargs, random_variables):
  fn, x, sigma = _setup(arch, mode, blind, channels, (2, 37, 45), dtype, tiny_kwargs, random_variables)
  equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))


@pytest.mark.parametrize("arch,mode,shape", list(itertools.product(
    ARCHS, ("norm_equiv", "wrapped", "scale_equiv"), ((1, 1, 1), (1, 9, 200), (3, 2, 3)))))
def test_odd_sizes(arch, mode, shape, dtype, tiny_kwargs, random_variables):
  blind = shape[1] != 1  # cover the noise map on 1x1 images too
  fn, x, sigma = _setup(arch, mode, blind, 1, shape, dtype, tiny_kwargs, random_variables)
  assert fn(x, sigma).shape == x.shape
  if mode == "scale_equiv":
    equivariance.assert_scale_equivariant(fn, x, sigma, scales=SCALES, **_tol(dtype))
  else:
    equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))


@pytest.mark.parametrize("arch,blind,channels", list(itertools.product(ARCHS, (True, False), (1, 3))))
def test_scale_equiv_is_scale_but_not_shift_equivariant(arch, blind, channels, dtype, tiny_kwargs,
                                                         random_variables):
  fn, x, sigma = _setup(arch, "scale_equiv", blind, channels, (2, 37, 45), dtype, tiny_kwargs,
                        random_variables)
  equivariance.assert_scale_equivariant(fn, x, sigma, scales=SCALES, **_tol(dtype))
  with pytest.raises(AssertionError, match="not shift-equivariant"):
    equivariance.assert_shift_equivariant(fn, x, sigma, shifts=(50.0, -1.2), **_tol(dtype))


@pytest.mark.parametrize("arch,blind,channels", list(itertools.product(ARCHS, (True, False), (1, 3))))
def test_ordinary_fails_both(arch, blind, channels, dtype, tiny_kwargs, random_variables):
  fn, x, sigma = _setup(arch, "ordinary", blind, channels, (2, 37, 45), dtype, tiny_kwargs,
                        random_variables)
  with pytest.raises(AssertionError, match="not normalization-equivariant"):
    equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))
  with pytest.raises(AssertionError, match="not scale-equivariant"):
    equivariance.assert_scale_equivariant(fn, x, sigma, scales=SCALES, **_tol(dtype))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("parametrization", ("centre", "roll"))
def test_kernels_sum_to_one(arch, parametrization, tiny_kwargs, random_variables):
  for blind in (True, False):
    module = models.create(arch, mode="norm_equiv", blind=blind, channels=3,
                           parametrization=parametrization, **tiny_kwargs[arch])
    x = jnp.zeros((1, 8, 8, 3))
    sigma = None if blind else 0.1
    variables = jax.jit(module.init)(jax.random.key(0), x, sigma)
    # A training-like perturbation of every stored parameter, anchor taps included.
    variables = jax.tree_util.tree_map(
        lambda v: v + 0.01 * jnp.asarray(np.random.default_rng(1).normal(size=v.shape), v.dtype),
        variables)
    kernels, sums = models.effective_kernels(module, variables)
    assert kernels and set(sums) <= set(kernels)
    for name, s in sums.items():
      target = 0.0 if arch == "dncnn" and name == f"conv_{tiny_kwargs[arch]['depth'] - 1}" else 1.0
      np.testing.assert_allclose(s, target, atol=1e-6, err_msg=name)
    # Every convolution of an NE network is constrained.
    assert set(sums) == set(kernels)


def test_equivariance_errors_reports_each_pair():
  rows = equivariance.equivariance_errors(lambda x: 2 * x, jnp.ones((1, 3, 3, 1)), pairs=PAIRS)
  assert [(r["a"], r["b"]) for r in rows] == list(PAIRS)
  # f(x) = 2x: f(ax+b) - (a f(x) + b) = b exactly.
  np.testing.assert_allclose([r["max_abs_error"] for r in rows], [abs(b) for _, b in PAIRS],
                             rtol=1e-6)


def test_rejects_non_positive_scale():
  with pytest.raises(ValueError, match="a > 0"):
    equivariance.assert_normalization_equivariant(lambda x: x, jnp.ones((1, 2, 2, 1)),
                                                  pairs=((-1.0, 0.0),))
