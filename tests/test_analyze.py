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


def _hand_count(arch, kw):
  """Receptive field side by hand: each 3x3 convolution widens it by 2 pixels at its resolution."""
  if arch in ("fdncnn", "dncnn"):
    return 2 * kw["depth"] + 1
  if arch == "ffdnet":  # depth convolutions at half resolution: 2*depth + 1 blocks of 2 pixels
    return 2 * (2 * kw["depth"] + 1)
  if arch == "cbdnet":  # the estimator's then the denoiser's convolutions, chained
    return 2 * (kw["estimator_depth"] + kw["depth"]) + 1
  raise AssertionError(arch)


import pytest  # noqa: E402


@pytest.mark.parametrize("arch,kw", [("fdncnn", dict(features=8, depth=4)), ("fdncnn", dict(features=4, depth=7)),
                                     ("dncnn", dict(features=8, depth=5)), ("ffdnet", dict(features=8, depth=4)),
                                     ("cbdnet", TINY["cbdnet"])])
def test_receptive_field_matches_hand_count(arch, kw):
  for mode in ("norm_equiv", "ordinary", "wrapped"):
    rf = analyze.receptive_field(models.create(arch, mode=mode, **kw))
    assert rf["height"] == rf["width"] == _hand_count(arch, kw), (mode, rf)
    assert rf.get("global", False) == (mode == "wrapped")  # the wrapper's statistics are global


@pytest.mark.parametrize("convs,side", (((1, 1), 10), ((1, 2), 14), ((2, 1), 14)))
def test_receptive_field_of_cbdnets_unet_matches_hand_count(convs, side):
  """A two-scale U-Net (non-blind: no estimator) by hand, centre pixel c = 16 of 32: the up
  path's k0 convolutions reach c-k0..c+k0; the upsampled half-resolution pixels (q -> 2q, 2q+1)
  there are (c-k0)//2..(c+k0)//2, widened by k1 at half resolution, pooled back to full
  pixels 2*lo..2*hi+1 and widened by the k0 convolutions down (the skip path stays inside)."""
  k0, k1 = convs
  lo, hi = (16 - k0) // 2 - k1, (16 + k0) // 2 + k1
  assert (2 * hi + 1 + k0) - (2 * lo - k0) + 1 == side
  for mode in ("norm_equiv", "ordinary"):
    rf = analyze.receptive_field(models.create("cbdnet", mode=mode, blind=False, features=(4, 4), convs=convs))
    assert rf["height"] == rf["width"] == side, (mode, rf)


def test_receptive_field_grows_with_depth_and_levels():
  small = analyze.receptive_field(models.create("drunet", mode="norm_equiv", features=(4, 4, 4, 4), blocks=1))
  deeper = analyze.receptive_field(models.create("drunet", mode="norm_equiv", features=(4, 4, 4, 4), blocks=2))
  fewer = analyze.receptive_field(models.create("drunet", mode="norm_equiv", features=(4, 4), blocks=1))
  assert fewer["height"] < small["height"] < deeper["height"]


def test_erf_sums_to_one_inside_the_receptive_field(tmp_path):
  m, v = _model("norm_equiv")
  images = [np.random.default_rng(i).random((40, 44, 1)).astype(np.float32) for i in range(3)]
  erf = analyze.effective_receptive_field(m, v, images, 25.0, size=32)
  assert erf.shape == (32, 32)
  np.testing.assert_allclose(erf.sum(), 1.0, rtol=1e-6)
  r = analyze.receptive_field(m)["radius"]
  inside = np.zeros_like(erf, bool)
  inside[16 - r:16 + r + 1, 16 - r:16 + r + 1] = True
  assert np.all(erf[~inside] == 0) and np.all(erf[inside] > 0)
  summary = analyze.erf_summary(erf)
  assert 0 <= summary["r50"] <= summary["r90"] <= summary["r99"] <= r
  with pytest.raises(ValueError, match="smaller than the 64x64 crop"):
    analyze.effective_receptive_field(m, v, images, 25.0, size=64)


def test_cli_erf(tmp_path):
  a = nj.save_weights(tmp_path / "a.nedenoise", *_model("norm_equiv"))
  b = nj.save_weights(tmp_path / "b.nedenoise", *_model("ordinary"))
  out = tmp_path / "res"
  assert analyze.main(["erf", "--model", str(a), "--model", str(b), "--sigmas", "5,50",
                       "--erf_size", "32", "--erf_images", "2", "--untrained", "--out", str(out)]) == 0
  import json

  res = json.loads((out / "analysis_erf.json").read_text())
  assert set(res["erf"]) == {"a", "b", "a (untrained)", "b (untrained)"}
  assert res["receptive_field"]["a"]["height"] == 2 * TINY["fdncnn"]["depth"] + 1
  assert set(res["erf"]["a"]["erf"]) == {"5", "50"}
  assert (out / "erf.png").stat().st_size > 1000
