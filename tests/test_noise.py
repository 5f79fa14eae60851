"""Noise models: empirical statistics match each model, maps transform as documented,
draws are reproducible per example and independent of the process split; the classical
noise-map estimators are accurate and scale-equivariant / shift-invariant."""

import numpy as np
import pytest

from nedenoise_jax import data, noise
from nedenoise_jax.training import config as config_lib


def _flat(value, size=256, channels=1):
  return np.full((size, size, channels), value)


def test_gaussian_map_statistics_and_patterns():
  nm = noise.NoiseModel(kind="gaussian_map", sigma_min=5.0, sigma_max=60.0)
  for i, pattern in enumerate(noise.PATTERNS):
    rng = np.random.default_rng(i)
    y, m = noise.NoiseModel(kind="gaussian_map", sigma_min=5.0, sigma_max=60.0,
                            patterns=(pattern,)).sample(_flat(0.5), rng)
    assert y.shape == (256, 256, 1) and m.shape == (256, 256, 1)
    assert m.min() >= 5 / 255 - 1e-7 and m.max() <= 60 / 255 + 1e-7
    z = (y - 0.5) / m  # standard normal wherever the map says
    assert abs(z.std() - 1) < 0.02 and abs(z.mean()) < 0.02
    if pattern == "constant":
      assert np.ptp(m) == 0
    elif pattern == "gradient":  # a plane: second differences vanish
      assert np.abs(np.diff(m[..., 0], 2, axis=0)).max() < 1e-5
      assert np.abs(np.diff(m[..., 0], 2, axis=1)).max() < 1e-5
    elif pattern == "piecewise":
      assert 2 <= len(np.unique(m)) <= 6
    else:  # low frequency: smooth
      assert np.abs(np.diff(m[..., 0], axis=0)).max() < 0.05 * np.ptp(m) + 1e-9
  # Training draws cover the range and both orientations of a pattern.
  maps = [nm.sample(_flat(0.5, 32), np.random.default_rng(i))[1] for i in range(200)]
  assert min(m.min() for m in maps) < 10 / 255 and max(m.max() for m in maps) > 55 / 255


@pytest.mark.parametrize("channels", (1, 3))
def test_poisson_gaussian_variance_is_affine_in_intensity(channels):
  a, b = 0.01, 0.002
  nm = noise.NoiseModel(kind="poisson_gaussian", a_min=a, a_max=a, b_min=b, b_max=b)
  for level in (0.05, 0.3, 0.9):
    y, m = nm.sample(_flat(level, 256, channels), np.random.default_rng(int(level * 100)))
    assert abs(y.mean() - level) < 3e-3
    assert abs(y.var() / (a * level + b) - 1) < 0.03
    np.testing.assert_allclose(m, np.sqrt(a * level + b), rtol=1e-6)
  # Poisson, not its Gaussian approximation: the counts y / a are integers without read noise.
  y, _ = noise.NoiseModel(kind="poisson_gaussian", a_min=a, a_max=a, b_min=0, b_max=0).sample(
      _flat(0.3, 64), np.random.default_rng(0))
  np.testing.assert_allclose(y / a, np.rint(y / a), atol=1e-3)


def test_poisson_gaussian_rescaled_is_poisson_gaussian():
  """``s*y + t`` has variance ``(s*a)*(s*x + t) + (s**2*b - s*a*t)`` and map ``s*m`` (module docstring)."""
  a, b, s, t = 0.01, 0.002, 65535.0, 1000.0
  x = 0.4
  y, m = noise.NoiseModel(kind="poisson_gaussian", a_min=a, a_max=a, b_min=b, b_max=b).sample(
      _flat(x, 256), np.random.default_rng(3))
  y2 = s * y.astype(np.float64) + t
  a2, b2 = s * a, s * s * b - s * a * t
  assert abs(y2.var() / (a2 * (s * x + t) + b2) - 1) < 0.03
  np.testing.assert_allclose(s * m, np.sqrt(a2 * (s * x + t) + b2), rtol=1e-5)


def test_camera_pipeline():
  a, b = 0.004, 0.0005
  nm = noise.NoiseModel(kind="camera", a_min=a, a_max=a, b_min=b, b_max=b, gamma=2.2)
  for level in (0.2, 0.5, 0.8):
    y, m = nm.sample(_flat(level, 256, 3), np.random.default_rng(1))
    assert 0 <= y.min() and y.max() <= 1
    assert abs(np.median(y) - level) < 0.02
  # Without mosaic or JPEG the map is the output's noise level, also where photon counts are
  # low, the response is curved and the values clip (the evaluation levels).
  for sigma in (15.0, 25.0, 50.0):
    at = noise.NoiseModel(kind="camera").at_level(sigma)
    for level in (0.1, 0.5, 0.9):
      y, m = at.sample(_flat(level, 256, 3), np.random.default_rng(int(sigma)))
      assert abs(y.std() / m.mean() - 1) < 0.03, (sigma, level)
  # The map follows the response: for gamma > 1 dark pixels are noisier per unit of noise.
  _, m_dark = nm.sample(_flat(0.2, 64, 3), np.random.default_rng(2))
  _, m_bright = nm.sample(_flat(0.8, 64, 3), np.random.default_rng(2))
  assert m_dark.mean() > m_bright.mean()
  # Mosaic + demosaicking + JPEG: the image keeps its shape and range; measured pixels
  # of a noiseless mosaic come back as they were.
  full = noise.NoiseModel(kind="camera", a_min=0, a_max=0, b_min=0, b_max=0, demosaic=True,
                          jpeg_quality=95)
  img = np.random.default_rng(4).uniform(size=(33, 47, 3))
  y, m = full.sample(img, np.random.default_rng(5))
  assert y.shape == img.shape and m.shape == (33, 47, 1) and np.all(m == 0)
  mosaic = np.sum(img * noise.bayer_mask(img.shape[:2]), axis=-1)
  dem = noise.demosaic_bilinear(mosaic)
  np.testing.assert_allclose(dem[noise.bayer_mask(img.shape[:2])], img[noise.bayer_mask(img.shape[:2])])
  flat = noise.demosaic_bilinear(np.full((9, 9), 0.25))
  np.testing.assert_allclose(flat, 0.25)


@pytest.mark.parametrize("kind", noise.KINDS)
def test_at_level(kind):
  nm = noise.NoiseModel(kind=kind).at_level(25.0)
  y, m = nm.sample(_flat(0.5, 256), np.random.default_rng(0))
  if kind == "gaussian_map":
    assert 12.5 / 255 - 1e-7 <= m.min() and m.max() <= 37.5 / 255 + 1e-7
  elif kind != "camera":
    np.testing.assert_allclose(m, 25 / 255, rtol=1e-5)
    assert abs(y.std() * 255 / 25 - 1) < 0.03


@pytest.mark.parametrize("kind", noise.KINDS)
def test_evaluation_draws_are_reproducible(kind):
  nm = noise.NoiseModel(kind=kind)
  img = np.random.default_rng(0).uniform(size=(1, 20, 24, 3)).astype(np.float32)
  y1, m1 = nm.noisy(img, 25.0, 3, seed=1)
  y2, m2 = nm.noisy(img, 25.0, 3, seed=1)
  np.testing.assert_array_equal(y1, y2)
  np.testing.assert_array_equal(m1, m2)
  assert y1.shape == img.shape and m1.shape == (1, 20, 24, 1)
  assert not np.array_equal(nm.noisy(img, 25.0, 4, seed=1)[0], y1)
  assert not np.array_equal(nm.noisy(img, 15.0, 3, seed=1)[0], y1)
  if kind == "gaussian":  # the same noise as evaluation always used
    np.testing.assert_array_equal(y1, noise.noisy_image(img, 25.0, 3, 1))


@pytest.mark.parametrize("kind", ("gaussian_map", "poisson_gaussian", "camera"))
def test_training_draws_per_example_and_split_independent(kind):
  images, _ = data.load_images("builtin:deadleaves:3", 3)
  nm = noise.NoiseModel(kind=kind, demosaic=True)
  kw = dict(patch_size=16, sigma_min=0.0, sigma_max=0.2, seed=1, global_batch=8, start_step=3,
            end_step=5, noise=nm)
  whole = list(data.train_batches(images, **kw))
  assert set(whole[0]) == {"clean", "sigma", "noisy", "noise_map"}
  assert whole[0]["noise_map"].shape == (8, 16, 16, 1)
  halves = [list(data.train_batches(images, process_index=p, process_count=2, **kw)) for p in (0, 1)]
  for step in range(2):
    for key in whole[0]:
      np.testing.assert_array_equal(
          whole[step][key], np.concatenate([halves[0][step][key], halves[1][step][key]]))
  again = list(data.train_batches(images, **{**kw, "start_step": 4}))
  np.testing.assert_array_equal(again[0]["noisy"], whole[1]["noisy"])


def test_config_validation():
  c = config_lib.base_config("fdncnn")
  assert noise.from_config(c.noise) == noise.NoiseModel(kind="gaussian", sigma_min=0.0, sigma_max=50.0)
  for key, value, match in (("kind", "speckle", "config.noise.kind='speckle'"),
                            ("a_min", 0.5, "config.noise.a_min=0.5, config.noise.a_max=0.02"),
                            ("sigma_min", -1.0, "config.noise.sigma_min=-1.0"),
                            ("patterns", "gradient,stripes", "config.noise.patterns='gradient,stripes'"),
                            ("jpeg_quality", 101, "jpeg_quality=101")):
    bad = dict(c.noise)
    bad[key] = value
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
      noise.from_config(bad)


def test_classical_estimators():
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:256, 0:256] / 256.0
  clean = (0.3 + 0.4 * xx)[..., None]  # smooth content cancels in the Haar details
  # Global: a known sigma.
  y = clean + 0.1 * rng.standard_normal(clean.shape)
  assert abs(noise.estimate_sigma(y) / 0.1 - 1) < 0.03
  # Local: a gradient map, recovered cell by cell.
  true = (0.02 + 0.1 * yy)[..., None]
  y = clean + true * rng.standard_normal(clean.shape)
  est = noise.classical_noise_map(y, method="local", window=32)
  assert est.shape == (256, 256, 1)
  inner = (slice(32, -32), slice(32, -32))
  assert np.median(np.abs(est[inner] / true[inner] - 1)) < 0.08
  # Poisson-Gaussian: the noise-level function is fitted.
  a, b = 0.01, 0.0004
  ramp = (0.05 + 0.9 * xx)[..., None]
  y, m = noise.NoiseModel(kind="poisson_gaussian", a_min=a, a_max=a, b_min=b, b_max=b).sample(ramp, rng)
  est = noise.classical_noise_map(y, method="poisson_gaussian", window=32)
  assert np.median(np.abs(est / m - 1)) < 0.08
  with pytest.raises(ValueError, match="unknown noise estimator 'mad'"):
    noise.classical_noise_map(y, method="mad")
  with pytest.raises(ValueError, match=r"shape \(1, 5, 1\)"):
    noise.classical_noise_map(np.zeros((1, 5, 1)))


@pytest.mark.parametrize("method", noise.ESTIMATORS)
def test_classical_estimators_scale_equivariant_shift_invariant(method):
  y = np.random.default_rng(1).uniform(size=(70, 90, 3))
  base = noise.classical_noise_map(y, method=method)
  for s, t in ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3)):
    np.testing.assert_allclose(noise.classical_noise_map(s * y + t, method=method), s * base,
                               rtol=1e-9, atol=1e-12 * s)
