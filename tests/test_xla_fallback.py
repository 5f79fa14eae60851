"""Whole models on XLA's path (``NEDENOISE_CPU_CONV=xla``): what users without a compiler, or on a GPU, run.

The layers dispatch per call (nedenoise_jax.kernels), so setting the variable
in the test switches every later trace to the reference XLA operations.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import equivariance, models
from nedenoise_jax.kernels import build

ARCHS = ("fdncnn", "drunet", "dncnn")


@pytest.fixture
def xla_path(monkeypatch):
  monkeypatch.setenv(build.ENV, "xla")
  assert not build.enabled()


def _lowered_text(module, variables, x, sigma):
  return jax.jit(lambda v, x: module.apply(v, x, sigma)).lower(variables, x).as_text()


@pytest.mark.parametrize("arch,blind", list(itertools.product(ARCHS, (True, False))))
def test_norm_equiv_models_on_xla(arch, blind, dtype, tiny_kwargs, random_variables, xla_path):
  module = models.create(arch, mode="norm_equiv", blind=blind, channels=1, **tiny_kwargs[arch])
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 13, 11, 1)), dtype)
  sigma = None if blind else jnp.asarray([0.1, 0.2], dtype)
  variables = random_variables(module, x, sigma)
  assert "nedenoise" not in _lowered_text(module, variables, x, sigma)
  fn = (lambda x: module.apply(variables, x)) if blind else (lambda x, s: module.apply(variables, x, s))
  tol = 1e-4 if dtype == jnp.float32 else 1e-10
  equivariance.assert_normalization_equivariant(fn, x, sigma, rtol=tol, atol=tol,
                                                pairs=((2.5, -40.0), (1e-3, 7.0)))


@pytest.mark.parametrize("arch,mode", list(itertools.product(ARCHS, ("norm_equiv", "ordinary"))))
def test_xla_path_equals_onednn_path(arch, mode, tiny_kwargs, random_variables, monkeypatch):
  """Values and parameter gradients of a whole model agree between the two paths (float32)."""
  if not build.will_use():
    pytest.skip("no C++ compiler or oneDNN wheels here: only the XLA path exists")
  module = models.create(arch, mode=mode, blind=True, channels=3, **tiny_kwargs[arch])
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 17, 15, 3)), jnp.float32)
  variables = random_variables(module, x)

  def run():
    loss = lambda p: jnp.mean(module.apply({**variables, "params": p}, x) ** 2)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(variables["params"]), _lowered_text(module, variables, x, None)

  (v1, g1), text1 = run()
  monkeypatch.setenv(build.ENV, "xla")
  (v2, g2), text2 = run()
  assert "nedenoise" in text1 and "nedenoise" not in text2
  np.testing.assert_allclose(v1, v2, rtol=2e-5)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5 * float(jnp.max(jnp.abs(b))) + 1e-7)
