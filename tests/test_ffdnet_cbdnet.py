"""FFDNet and CBDNet: exact equivariance in every mode (blind and non-blind, gray and
colour, odd sizes, noise maps), the NE noise estimator's scale/shift property, full-size
parameter counts against KAIR, map scaling, and bad input."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import equivariance, models

from conftest import TINY

PAIRS = ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3))
CBDNET = {  # the three denoisers a CBDNet can use, tiny
    "fdncnn": TINY["cbdnet"],
    "ffdnet": dict(TINY["cbdnet"], denoiser="ffdnet"),
    "drunet": dict(estimator_features=8, estimator_depth=2, denoiser="drunet", features=(8, 8, 16), blocks=1),
    # Three scales, one convolution each: the paper's 16-deep chain of random affine filters
    # amplifies float32 rounding to 1e-5 of the output (a random 17-layer FDnCNN nears it too).
    "unet": dict(estimator_features=8, estimator_depth=2, denoiser="unet", features=(8, 8, 16),
                 convs=(1, 1, 1)),
}
CASES = ([("ffdnet", TINY["ffdnet"], blind) for blind in (False, True)]
         + [("cbdnet", kw, blind) for kw, blind in itertools.product(CBDNET.values(), (True, False))])


def _tol(dtype):
  # Relative to the output's magnitude (issue 21): float64 1e-12, float32 1e-5.
  return dict(atol=0.0, rtol=1e-12 if dtype == jnp.float64 else 1e-5)


def _setup(arch, kw, mode, blind, channels, shape, dtype, sigma_form="map", seed=0):
  module = models.create(arch, mode=mode, blind=blind, channels=channels, **kw)
  rng = np.random.default_rng(seed)
  n, h, w = shape
  x = jnp.asarray(rng.uniform(size=(n, h, w, channels)), dtype)
  sigma = None
  if not blind:
    sigma = {"map": lambda: rng.uniform(0.02, 0.2, size=(n, h, w, 1)),
             "per_image": lambda: rng.uniform(0.02, 0.2, size=(n,)),
             "scalar": lambda: np.float64(0.1)}[sigma_form]()
    sigma = jnp.asarray(sigma, dtype)
  variables = equivariance.random_variables(module, x, sigma, seed=seed)
  return module, variables, x, sigma


@pytest.mark.parametrize("arch,kw,blind", CASES)
@pytest.mark.parametrize("mode", ("norm_equiv", "wrapped"))
@pytest.mark.parametrize("channels", (1, 3))
def test_normalization_equivariant(arch, kw, blind, mode, channels, dtype):
  module, variables, x, sigma = _setup(arch, kw, mode, blind, channels, (2, 13, 19), dtype)
  fn = jax.jit(lambda x, s=None: module.apply(variables, x, s))
  equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))


@pytest.mark.parametrize("arch,kw,blind", CASES[:3])
@pytest.mark.parametrize("shape,sigma_form", (((1, 1, 1), "scalar"), ((1, 9, 31), "per_image"),
                                              ((3, 2, 3), "map"), ((1, 7, 5), "map")))
def test_odd_sizes_and_sigma_forms(arch, kw, blind, shape, sigma_form, dtype):
  for mode in ("norm_equiv", "wrapped"):
    module, variables, x, sigma = _setup(arch, kw, mode, blind, 1, shape, dtype, sigma_form)
    fn = jax.jit(lambda x, s=None: module.apply(variables, x, s))
    assert fn(x, sigma).shape == x.shape and fn(x, sigma).dtype == x.dtype
    equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))


@pytest.mark.parametrize("arch,kw,blind", CASES)
def test_scale_equiv_and_ordinary(arch, kw, blind, dtype):
  module, variables, x, sigma = _setup(arch, kw, "scale_equiv", blind, 3, (2, 13, 19), dtype)
  fn = jax.jit(lambda x, s=None: module.apply(variables, x, s))
  equivariance.assert_scale_equivariant(fn, x, sigma, scales=(10.0, 0.3, 1.7), **_tol(dtype))
  module, variables, x, sigma = _setup(arch, kw, "ordinary", blind, 3, (2, 13, 19), dtype)
  fn = jax.jit(lambda x, s=None: module.apply(variables, x, s))
  with pytest.raises(AssertionError, match="not normalization-equivariant"):
    equivariance.assert_normalization_equivariant(fn, x, sigma, pairs=PAIRS, **_tol(dtype))


@pytest.mark.parametrize("channels", (1, 3))
def test_unet_at_the_papers_depth_is_exactly_ne(channels):
  """The U-Net's full chain of convolutions (2, 3, 6 down, 3, 2 up), tiny widths: exact to
  1e-12 of the output in float64 (float32 rounding through 16 random affine layers reaches
  1e-5, hence the shallower CBDNET["unet"] above)."""
  kw = dict(CBDNET["unet"], convs=(2, 3, 6))
  with jax.enable_x64(True):
    module, variables, x, _ = _setup("cbdnet", kw, "norm_equiv", True, channels, (1, 13, 19), jnp.float64)
    fn = jax.jit(lambda x: module.apply(variables, x))
    equivariance.assert_normalization_equivariant(fn, x, pairs=PAIRS, **_tol(jnp.float64))


def _assert_scale_shift(fn, x, pairs, tol, shift=True, relative_to_image=False):
  """``fn(a*x + b) == a*fn(x)``: scale-equivariant and shift-invariant (an estimated noise level).

  The tolerance is ``rtol`` times ``max|a*fn(x)|`` (the map), or with
  ``relative_to_image`` times ``max|a*x + b|``, the scale of the denoisers'
  outputs that their own checks use.
  """
  base = fn(x)
  for a, b in pairs:
    b = b if shift else 0.0
    want = a * base
    ref = jnp.abs(a * x + b) if relative_to_image else jnp.abs(want)
    got = fn(a * x + b)
    chex.assert_trees_all_close(got, want, atol=tol["rtol"] * float(jnp.max(ref)), rtol=0)


@pytest.mark.parametrize("kw", CBDNET.values(), ids=CBDNET.keys())
@pytest.mark.parametrize("mode", ("norm_equiv", "wrapped", "scale_equiv", "ordinary"))
@pytest.mark.parametrize("channels", (1, 3))
def test_estimator_scale_equivariant_shift_invariant(kw, mode, channels, dtype):
  module, variables, x, _ = _setup("cbdnet", kw, mode, True, channels, (2, 15, 11), dtype)
  est = jax.jit(lambda x: models.estimate_map(module, variables, x))
  m = est(x)
  assert m.shape == (2, 15, 11, 1) and m.dtype == x.dtype and bool(jnp.all(m >= 0))
  # The estimator is the one the model uses.
  _, m2 = jax.jit(lambda x: module.apply(variables, x, return_map=True))(x)
  scale = float(jnp.max(m))
  np.testing.assert_allclose(m2, m, rtol=0, atol=(1e-12 if dtype == jnp.float64 else 1e-4) * scale)
  if mode == "norm_equiv":
    _assert_scale_shift(est, x, PAIRS, _tol(dtype))
  elif mode == "wrapped":
    # In float32 the input 10*x + 50 is itself rounded by ~1e-6 of the image's
    # spread; the ordinary estimator inside amplifies that to ~2e-5 of the map
    # (the NE estimator does not), so this check is relative to the image, as
    # for the denoisers; float64 meets 1e-12 of the map itself.
    _assert_scale_shift(est, x, PAIRS, _tol(dtype), relative_to_image=dtype != jnp.float64)
  elif mode == "scale_equiv":
    _assert_scale_shift(est, x, PAIRS, _tol(dtype), shift=False)
    with pytest.raises(AssertionError):
      _assert_scale_shift(est, x, ((1.0, 0.7),), _tol(dtype))
  else:
    with pytest.raises(AssertionError):
      _assert_scale_shift(est, x, PAIRS, _tol(dtype))


def test_norm_equiv_estimator_kernels():
  """Every convolution of an NE CBDNet is constrained: the estimator's last filters sum to 0,
  all the others (denoiser included, its map channel free) to 1."""
  module, variables, _, _ = _setup("cbdnet", CBDNET["fdncnn"], "norm_equiv", True, 3, (1, 8, 8), jnp.float32)
  variables = jax.tree_util.tree_map(lambda v: v + 0.01, variables)
  kernels, sums = models.effective_kernels(module, variables)
  assert set(sums) == set(kernels)
  last = f"estimator/conv_{CBDNET['fdncnn']['estimator_depth'] - 1}"
  for name, s in sums.items():
    np.testing.assert_allclose(s, 0.0 if name == last else 1.0, atol=1e-5, err_msg=name)


def _count_kair_ffdnet(in_nc, nc, nb):
  """KAIR's FFDNet by hand: head conv(4*in_nc + 1 -> nc), nb - 2 convs nc -> nc, tail
  conv(nc -> 4*in_nc), 3x3 with biases."""
  conv = lambda i, o: 9 * i * o + o  # noqa: E731
  return conv(4 * in_nc + 1, nc) + (nb - 2) * conv(nc, nc) + conv(nc, 4 * in_nc)


@pytest.mark.parametrize("channels,features,depth,expected", ((1, 64, 15, 485_316), (3, 96, 12, 852_108)))
def test_ffdnet_full_size_parameters_match_kair(channels, features, depth, expected):
  assert _count_kair_ffdnet(channels, features, depth) == expected
  module = models.create("ffdnet", mode="ordinary", channels=channels, features=features, depth=depth)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, channels)), 0.1)
  assert models.count_params(shapes) == expected
  ne = models.create("ffdnet", mode="norm_equiv", channels=channels, features=features, depth=depth)
  ne_shapes = jax.eval_shape(ne.init, jax.random.key(0), jnp.zeros((1, 8, 8, channels)), 0.1)
  biases = features * (depth - 1) + 4 * channels
  assert models.count_params(ne_shapes) == expected - biases  # NE: no biases


def _count_cbdnet(channels):
  """The paper's CBDNet by hand (Guo et al. 2019, Fig. 2), with one map channel: estimator 5
  convs of 32 (the last to the map); U-Net 2 convs of 64, avg pool, 3 of 128, avg pool, 6 of
  256, 2x2 transposed conv to 128, 3 of 128, transposed conv to 64, 2 of 64, 1x1 conv to the
  image; 3x3 convolutions, biases everywhere."""
  conv = lambda i, o, k=3: k * k * i * o + o  # noqa: E731
  est = conv(channels, 32) + 3 * conv(32, 32) + conv(32, 1)
  down = conv(channels + 1, 64) + conv(64, 64) + conv(64, 128) + 2 * conv(128, 128) + conv(128, 256) + 5 * conv(256, 256)
  up = conv(256, 128, 2) + 3 * conv(128, 128) + conv(128, 64, 2) + 2 * conv(64, 64) + conv(64, channels, 1)
  biases = 4 * 32 + 1 + 2 * 64 + 3 * 128 + 6 * 256 + 128 + 3 * 128 + 64 + 2 * 64 + channels
  return est + down + up, biases


@pytest.mark.parametrize("channels,expected", ((1, 4_361_794), (3, 4_363_652)))
def test_cbdnet_full_size_parameters(channels, expected):
  """The default CBDNet is the paper's: estimator and U-Net, layer for layer."""
  total, biases = _count_cbdnet(channels)
  assert total == expected
  x = jnp.zeros((1, 8, 8, channels))
  counts = {}
  for mode in ("ordinary", "scale_equiv", "norm_equiv"):
    module = models.create("cbdnet", mode=mode, channels=channels)
    assert module.denoiser == "unet"
    counts[mode] = models.count_params(jax.eval_shape(module.init, jax.random.key(0), x))
  # No biases without ordinary; norm_equiv adds one alpha per affine residual (2 skips, 1 global).
  assert counts == {"ordinary": expected, "scale_equiv": expected - biases,
                    "norm_equiv": expected - biases + 3}


def test_defaults():
  assert models.create("ffdnet", mode="norm_equiv").blind is False
  assert models.create("cbdnet", mode="norm_equiv").blind is True
  desc = models.describe(models.create("cbdnet", mode="wrapped", channels=3, **CBDNET["drunet"]))
  again = models.from_description(desc)
  assert models.describe(again) == desc and models.estimates_noise(again)


def test_map_scale_and_return_map():
  for mode in ("norm_equiv", "wrapped"):
    module, variables, x, _ = _setup("cbdnet", CBDNET["fdncnn"], mode, True, 1, (2, 12, 12), jnp.float32)
    y = module.apply(variables, x)
    np.testing.assert_array_equal(module.apply(variables, x, map_scale=1.0), y)
    assert float(jnp.max(jnp.abs(module.apply(variables, x, map_scale=3.0) - y))) > 1e-4
    y2, m = module.apply(variables, x, return_map=True)
    np.testing.assert_array_equal(y2, y)
    assert m.shape == (2, 12, 12, 1)
    if mode == "norm_equiv":
      # map_scale multiplies the estimate the denoiser gets: the denoiser alone, given 3 x the map.
      kw = CBDNET["fdncnn"]
      den = models.create("fdncnn", mode=mode, blind=False, features=kw["features"][0], depth=kw["depth"])
      want = den.apply({"params": variables["params"]["denoiser"]}, x, 3.0 * m)
      np.testing.assert_allclose(module.apply(variables, x, map_scale=3.0), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ("ffdnet", "cbdnet"))
def test_bad_input(arch):
  kw = TINY[arch]
  x = jnp.ones((1, 6, 6, 1))
  nonblind = models.create(arch, mode="norm_equiv", blind=False, **kw)
  v = equivariance.random_variables(nonblind, x, jnp.full((1,), 0.1))
  for bad, match in ((jnp.ones((1, 5, 6, 1)), r"expected a scalar, \(1,\), \(1, 1, 1, 1\) or \(1, 6, 6, 1\)"),
                     (jnp.full((1, 6, 6, 1), -0.1), "negative values"),
                     (jnp.full((1, 6, 6, 1), jnp.nan), "NaN or infinite")):
    with pytest.raises(ValueError, match=match):
      nonblind.apply(v, x, bad)
  with pytest.raises(ValueError, match="is non-blind: pass sigma"):
    nonblind.apply(v, x)
  blind = models.create(arch, mode="norm_equiv", blind=True, **kw)
  vb = equivariance.random_variables(blind, x)
  with pytest.raises(ValueError, match="is blind: call it with sigma=None"):
    blind.apply(vb, x, 0.1)
  with pytest.raises(ValueError, match="built for 1 channel"):
    blind.apply(vb, jnp.ones((1, 6, 6, 3)))


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown cbdnet denoiser 'resnet'"):
    models.create("cbdnet", mode="norm_equiv", denoiser="resnet")
  with pytest.raises(ValueError, match=r"takes features=\(F0, F1, ...\), a width per scale"):
    models.create("cbdnet", mode="norm_equiv", features=(8,))
  with pytest.raises(ValueError, match=r"one count >= 1 per scale .* got convs=\(2, 3\)"):
    models.create("cbdnet", mode="norm_equiv", convs=(2, 3))
  with pytest.raises(ValueError, match=r"features=\(F,\)"):
    models.create("cbdnet", mode="norm_equiv", denoiser="fdncnn", features=(8, 16))
  with pytest.raises(ValueError, match="even feature counts"):
    models.create("cbdnet", mode="norm_equiv", estimator_features=7)
  with pytest.raises(ValueError, match="unknown keyword"):
    models.create("ffdnet", mode="norm_equiv", blocks=2)
  with pytest.raises(ValueError, match="does not estimate noise maps"):
    m = models.create("ffdnet", mode="norm_equiv", **TINY["ffdnet"])
    models.estimate_map(m, {}, jnp.ones((1, 4, 4, 1)))
