"""PSNR and SSIM against an independent reference: scikit-image's implementations (test-only dependency)."""

import numpy as np
import pytest

from nedenoise_jax import metrics

skm = pytest.importorskip("skimage.metrics")


def _pair(shape, seed):
  rng = np.random.default_rng(seed)
  ref = rng.uniform(size=shape).astype(np.float32)
  # Smooth structure plus noise, and values outside [0, 1] that the metrics clip.
  ref = (ref + np.roll(ref, 1, axis=1) + np.roll(ref, 1, axis=2)) / 3
  x = ref + 0.1 * rng.standard_normal(shape).astype(np.float32)
  return x, ref


@pytest.mark.parametrize("shape", [(2, 31, 27, 1), (1, 40, 33, 3), (1, 11, 11, 1)])
def test_psnr_matches_skimage(shape):
  x, ref = _pair(shape, 0)
  got = np.asarray(metrics.psnr(x, ref))
  want = [skm.peak_signal_noise_ratio(r.astype(np.float64), np.clip(a, 0, 1).astype(np.float64), data_range=1.0)
          for a, r in zip(x, ref)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 31, 27, 1), (1, 40, 33, 3), (1, 11, 11, 1)])
def test_ssim_matches_skimage(shape):
  # Wang et al.'s SSIM: 11x11 Gaussian window of sigma 1.5, population
  # covariances, K1 = 0.01, K2 = 0.03, mean over the valid region (skimage
  # crops the filter's border), channels averaged.
  x, ref = _pair(shape, 1)
  got = np.asarray(metrics.ssim(x, ref))
  want = [skm.structural_similarity(np.clip(a, 0, 1).astype(np.float64), r.astype(np.float64), data_range=1.0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    channel_axis=-1)
          for a, r in zip(x, ref)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 200, 256, 1), (1, 321, 481, 3), (1, 177, 163, 3), (1, 161, 170, 1)])
def test_ms_ssim_matches_pytorch_msssim(shape):
  """Wang, Simoncelli & Bovik 2003's 5 scales and weights, against pytorch_msssim
  (an independent implementation in PyTorch; test-only dependency) run in float64,
  odd sizes included (ours, in float32, is within 4e-7 of it)."""
  torch = pytest.importorskip("torch")
  ref_impl = pytest.importorskip("pytorch_msssim")
  x, ref = _pair(shape, 2)
  got = np.asarray(metrics.ms_ssim(x, ref))
  t = lambda a: torch.tensor(np.clip(a, 0, 1) if a is x else a, dtype=torch.float64).permute(0, 3, 1, 2)  # noqa: E731
  want = ref_impl.ms_ssim(t(x), t(ref), data_range=1.0, size_average=False).numpy()
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  assert np.all(got < 1) and np.all(got > 0)
  np.testing.assert_allclose(np.asarray(metrics.ms_ssim(ref, ref)), 1.0, atol=1e-6)


def test_ms_ssim_rejects_small_images():
  with pytest.raises(ValueError, match=r"larger than 160 pixels on their smaller side, got shape \(1, 160, 300, 1\)"):
    metrics.ms_ssim(np.zeros((1, 160, 300, 1)), np.zeros((1, 160, 300, 1)))
