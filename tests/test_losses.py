"""Training losses: values and limits, the loss switch (before = a plain run, resume across
it exact), and clear errors for bad loss keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import metrics
from nedenoise_jax.training import config as config_lib, losses, loop as train

from test_train import _leaves, _params, tiny_config


def _pair(seed=0, shape=(2, 40, 36, 3), noise=0.1):
  rng = np.random.default_rng(seed)
  clean = rng.uniform(size=shape).astype(np.float32)
  clean = (clean + np.roll(clean, 1, 1) + np.roll(clean, 1, 2)) / 3
  return jnp.asarray(clean + noise * rng.standard_normal(shape).astype(np.float32)), jnp.asarray(clean)


def test_values():
  out, clean = _pair()
  np.testing.assert_allclose(losses.reconstruction("mse", out, clean), np.mean((out - clean) ** 2), rtol=1e-6)
  np.testing.assert_allclose(losses.reconstruction("l1", out, clean), np.mean(np.abs(out - clean)), rtol=1e-6)
  np.testing.assert_allclose(losses.reconstruction("ssim", out, clean),
                             1 - np.mean(metrics.ssim(out, clean, clip=False)), rtol=1e-6)
  for name in losses.RECONSTRUCTION:
    np.testing.assert_allclose(losses.reconstruction(name, clean, clean), 0.0, atol=1e-6)
    # More noise, more loss; finite gradients.
    small = losses.reconstruction(name, _pair(noise=0.05)[0], clean)
    assert 0 < small < losses.reconstruction(name, out, clean), name
    g = jax.grad(lambda o: losses.reconstruction(name, o, clean))(out)
    assert bool(jnp.all(jnp.isfinite(g))), name
  # The mix's ends: alpha = 1 is the MS-SSIM loss, alpha = 0 the Gaussian-weighted l1,
  # which on a uniform error is the l1 itself (the weights are normalized at the borders too).
  np.testing.assert_allclose(losses.reconstruction("mix", out, clean, alpha=1.0),
                             losses.reconstruction("ms_ssim", out, clean), rtol=1e-6)
  np.testing.assert_allclose(losses.reconstruction("mix", clean + 0.1, clean, alpha=0.0), 0.1, rtol=1e-5)


def test_per_pixel_ms_ssim_on_a_tiny_patch_and_against_a_direct_sum():
  """The Gaussian of sigma 8 is wider than a 16-pixel patch; the normalized blur stays exact
  for a constant, and the map at one pixel equals a direct weighted sum."""
  out, clean = _pair(shape=(1, 16, 16, 1))
  m = losses.ms_ssim_map(out, clean)
  assert m.shape == (1, 16, 16, 1) and bool(jnp.all(jnp.isfinite(m)))
  np.testing.assert_allclose(losses._gauss_blur(jnp.full((1, 16, 16, 1), 0.3), 8.0), 0.3, rtol=1e-6)
  # Direct: weights g(i - 5) g(j - 7) restricted to the image, normalized.
  a = np.asarray(out[0, :, :, 0], np.float64)
  sigma, r = 2.0, 6
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  g /= g.sum()
  w = np.zeros((16, 16))
  for i in range(16):
    for j in range(16):
      if abs(i - 5) <= r and abs(j - 7) <= r:
        w[i, j] = g[i - 5 + r] * g[j - 7 + r]
  want = np.sum(w * a) / np.sum(w)
  got = float(losses._gauss_blur(out, sigma)[0, 5, 7, 0])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_switch_follows_plain_run_then_differs_and_resumes(tmp_path):
  plain = tiny_config(**{"train.steps": 8})
  switching = tiny_config(**{"train.steps": 8, "train.loss_switch_step": 4, "train.loss_after": "mix"})
  train.train_and_evaluate(plain, str(tmp_path / "plain"), progress=False)
  train.train_and_evaluate(switching, str(tmp_path / "sw"), progress=False)
  lp = [r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "plain"))]
  ls = [r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "sw"))]
  assert ls[:4] == lp[:4] and all(a != b for a, b in zip(ls[4:], lp[4:]))
  # Interrupted before the switch, resumed across it: exact.
  train.train_and_evaluate(switching, str(tmp_path / "sw2"), progress=False, stop_after=3)
  train.train_and_evaluate(switching, str(tmp_path / "sw2"), progress=False)
  for x, y in zip(_leaves(_params(str(tmp_path / "sw"), switching)),
                  _leaves(_params(str(tmp_path / "sw2"), switching))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("overrides,match", [
    ({"train.loss": "huber"}, r"config.train.loss='huber'; expected one of \('mse', 'l1', 'ssim', 'ms_ssim', 'mix'\)"),
    ({"train.loss_switch_step": 4, "train.loss_after": "l3"}, "config.train.loss_after='l3'"),
    ({"train.loss_switch_step": 10, "train.loss_after": "mix"},
     r"config.train.loss_switch_step=10 is beyond the run \(config.train.steps=10\)"),
    ({"train.loss_after": "mix"}, "config.train.loss_after='mix' needs config.train.loss_switch_step > 0"),
    ({"train.loss_alpha": 1.5}, "config.train.loss_alpha=1.5"),
    ({"train.loss_switch_step": -2, "train.loss_after": "mix"}, "config.train.loss_switch_step=-2; expected 0"),
])
def test_bad_loss_keys(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "w"), progress=False)
  assert not (tmp_path / "w").exists()


def test_config_declares_loss_keys():
  c = config_lib.base_config("fdncnn")
  assert (c.train.loss, c.train.loss_alpha, c.train.loss_switch_step, c.train.loss_after) == ("mse", 0.84, 0, "")
