"""analyze: Jacobian rows of NE models sum to 1; the dilemma leaves NE models unchanged."""

import jax.numpy as jnp
import numpy as np

import nedenoise_jax as nj
from nedenoise_jax import analyze, models

from conftest import TINY


def _model(mode, blind=True):
  module = models.create("fdncnn", mode=mode, blind=blind, channels=1, **TINY["fdncnn"])
  return module, nj.equivariance.random_variables(
      module, jnp.zeros((1, 8, 8, 1)), None if blind else jnp.zeros((1,)))


def test_filters_rows_and_jacobian():
  rng = np.random.default_rng(0)
  noisy = rng.random((13, 11, 1)).astype(np.float32)
  pixels = [(0, 0), (6, 5), (12, 10)]
  for mode, blind in (("norm_equiv", True), ("norm_equiv", False), ("ordinary", True)):
    m, v = _model(mode, blind)
    rows = analyze.adaptive_filters(m, v, noisy, 25.0, pixels)
    jac = analyze.jacobian(m, v, noisy, 25.0)
    assert jac.shape == (13 * 11, 13 * 11)
    for k, (i, j) in enumerate(pixels):
      np.testing.assert_allclose(rows[k].reshape(-1), jac[i * 11 + j], atol=1e-5)
    if mode == "norm_equiv":
      np.testing.assert_allclose(rows.sum(axis=(1, 2)), 1.0, atol=1e-4)
      np.testing.assert_allclose(jac.sum(axis=1), 1.0, atol=1e-4)
  # an ordinary model with biases has no reason to sum to 1
  m, v = _model("ordinary")
  assert np.max(np.abs(analyze.jacobian(m, v, noisy, 25.0).sum(axis=1) - 1.0)) > 1e-2


def test_dilemma():
  clean = np.random.default_rng(1).random((16, 16, 1)).astype(np.float32)
  ne = analyze.dilemma(*_model("norm_equiv"), clean, 25.0)
  vals = np.array(list(ne.values()))
  assert np.ptp(vals) < 1e-3, ne
  plain = analyze.dilemma(*_model("ordinary"), clean, 25.0)
  assert np.ptp(np.array(list(plain.values()))) > 0.1
