"""NN3D: the guided nonlocal filter's weights sum to one and use noise-normalized distances,
so the whole iterated scheme is NE around an NE CNN (float64 to 1e-12 of the output)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import equivariance, evaluate as ev, models, save_weights
from nedenoise_jax.nn import nonlocal_filter as nl

from conftest import TINY

PAIRS = ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3))


def _tol(dtype):
  return dict(atol=0.0, rtol=1e-12 if dtype == jnp.float64 else 1e-5)


@pytest.mark.parametrize("arch", ("fdncnn", "ffdnet"))
@pytest.mark.parametrize("blind", (True, False))
@pytest.mark.parametrize("channels", (1, 3))
def test_nn3d_is_normalization_equivariant(arch, blind, channels, dtype):
  module = models.create(arch, mode="norm_equiv", blind=blind, channels=channels, **TINY[arch])
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 17, 23, channels)), dtype)
  sigma = None if blind else jnp.asarray([0.1, 0.2], dtype)
  variables = equivariance.random_variables(module, x, sigma)
  wrapped, wv = nl.wrap(module, variables, iterations=2, search=3, patch=1)
  fn = jax.jit(lambda x, s=None: wrapped.apply(wv, x, s))
  assert fn(x, sigma).shape == x.shape
  equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))
  ordinary = models.create(arch, mode="ordinary", blind=blind, channels=channels, **TINY[arch])
  ow, ov = nl.wrap(ordinary, equivariance.random_variables(ordinary, x, sigma), iterations=1, search=3, patch=1)
  with pytest.raises(AssertionError, match="not normalization-equivariant"):
    equivariance.assert_normalization_equivariant(jax.jit(lambda x, s=None: ow.apply(ov, x, s)), x, sigma,
                                                  pairs=PAIRS, **_tol(dtype))
  # A per-pixel map: each pixel's weights use its own level; still NE.
  noise_map = jnp.asarray(rng.uniform(0.05, 0.2, size=(2, 17, 23, 1)), dtype)
  mapped, mv = nl.wrap(module, variables, iterations=1, search=3, patch=1)
  equivariance.assert_normalization_equivariant(jax.jit(lambda x, s: mapped.apply(mv, x, s)), x, noise_map,
                                                pairs=PAIRS, **_tol(dtype))
  with pytest.raises(ValueError, match=r"NN3D: sigma has shape \(2, 5\)"):
    mapped.apply(mv, x, jnp.ones((2, 5), dtype))
  # Zero iterations is the CNN itself.
  zero, zv = nl.wrap(module, variables, iterations=0)
  np.testing.assert_array_equal(zero.apply(zv, x, sigma), module.apply(variables, x, sigma))


def test_nonlocal_means_properties():
  rng = np.random.default_rng(1)
  y = jnp.asarray(0.5 + 0.1 * rng.standard_normal((2, 40, 36, 3)), jnp.float32)
  guide = jnp.full_like(y, 0.5)
  f = nl.nonlocal_means(y, guide, jnp.asarray([0.1, 0.1]), search=5, patch=2)
  # A flat guide gives equal weights: the window mean, 121 pixels, noise / 11.
  assert abs(float(jnp.std(f[:, 10:-10, 10:-10])) - 0.1 / 11) < 0.002
  # Weights sum to 1: a constant image stays constant, whatever the guide.
  const = nl.nonlocal_means(jnp.full_like(y, 0.7), y, jnp.asarray([0.1, 0.1]))
  np.testing.assert_allclose(const, 0.7, rtol=4e-6)  # float32 rounding of a 121-term weighted mean
  # sigma = 0: the input back.
  np.testing.assert_array_equal(nl.nonlocal_means(y, y, jnp.zeros((2,))), y)
  # The filter is NE in (y, guide, sigma) jointly; Donoho's estimate is scale-equivariant, shift-invariant.
  for a, b in PAIRS:
    np.testing.assert_allclose(nl.nonlocal_means(a * y + b, a * y + b, a * jnp.asarray([0.1, 0.1])),
                               a * nl.nonlocal_means(y, y, jnp.asarray([0.1, 0.1])) + b, rtol=0,
                               atol=2e-5 * (a + abs(b)))
    np.testing.assert_allclose(nl.mad_sigma(a * y + b), a * nl.mad_sigma(y), rtol=1e-4)
  np.testing.assert_allclose(nl.mad_sigma(y), 0.1, rtol=0.05)


def test_evaluate_nn3d_variants(tmp_path):
  module = models.create("fdncnn", mode="norm_equiv", blind=True, **TINY["fdncnn"])
  path = save_weights(tmp_path / "m.nedenoise", module, equivariance.random_variables(module, jnp.zeros((1, 8, 8, 1))))
  out = tmp_path / "res"
  assert ev.main(["--model", str(path), "--data", "builtin:deadleaves-val", "--sigmas", "25",
                  "--max_images", "1", "--nn3d", "1,2", "--out", str(out), "--no_progress", "--no_plot"]) == 0
  import json

  res = json.loads((out / "results.json").read_text())
  assert set(res["models"]) == {"m", "m+nn3d1", "m+nn3d2"}
  assert ev.main(["--model", str(path), "--data", "builtin:deadleaves-val", "--nn3d", "0",
                  "--out", str(out)]) == 2
