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
