"""Training losses: reconstruction losses for restoration (Zhao et al. 2017), their
switching, and CBDNet's losses on the estimated noise map.

All take NHWC arrays in the training data's units and return a scalar mean.
The SSIM terms use ``C1 = (0.01 * L)**2`` and ``C2 = (0.03 * L)**2`` with
``L = 1``: the dynamic range of the training data, clean images in [0, 1]
(the constants only keep the ratios defined where means and variances vanish;
their size relative to the data's range is what Wang et al. fixed, so ``L``
must be that range, known in training). The loss is used only in training, so
an NE model's inference, on any range, is unaffected.

``mse`` (l2), ``l1``, ``ssim`` (``1 - SSIM``, the evaluation metric: 11x11
Gaussian window of sigma 1.5, valid region), ``ms_ssim`` and ``mix``. For
training on small patches, ``ms_ssim`` is Zhao et al.'s per-pixel
approximation, ``1 - mean(l_M * prod_j cs_j)`` with the luminance at the largest
and the contrast-structure terms at every Gaussian width ``sigma_j`` in
``(0.5, 1, 2, 4, 8)``, all at full resolution (no pooling: a 40-pixel patch has
no 5th scale), each Gaussian applied with zero padding normalized by its
weights inside the image. ``mix`` is ``alpha * (1 - MS-SSIM) + (1 - alpha) *
G_8 * |err|`` per pixel (the l1 error weighted by the largest Gaussian), alpha =
``train.loss_alpha`` (0.84 in the paper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax.evaluation import metrics

RECONSTRUCTION = ("mse", "l1", "ssim", "ms_ssim", "mix")
ZHAO_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
_C1, _C2 = 0.01 ** 2, 0.03 ** 2


def _gauss_blur(a: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian of ``sigma`` (radius ``ceil(3 sigma)``), same size, zero padding
  renormalized by the kernel's weight inside the image, per channel."""
  r = int(np.ceil(3 * sigma))
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  g = jnp.asarray(g / g.sum(), a.dtype)
  c = a.shape[-1]
  dn = ("NHWC", "HWIO", "NHWC")

  def sep(v):
    v = jax.lax.conv_general_dilated(v, jnp.tile(g[:, None, None, None], (1, 1, 1, c)), (1, 1),
                                     ((r, r), (0, 0)), dimension_numbers=dn, feature_group_count=c)
    return jax.lax.conv_general_dilated(v, jnp.tile(g[None, :, None, None], (1, 1, 1, c)), (1, 1),
                                        ((0, 0), (r, r)), dimension_numbers=dn, feature_group_count=c)

  weight = sep(jnp.ones((1,) + a.shape[1:], a.dtype))
  return sep(a) / weight


def _lum_cs(x: jax.Array, y: jax.Array, sigma: float):
  mx, my = _gauss_blur(x, sigma), _gauss_blur(y, sigma)
  sxx = _gauss_blur(x * x, sigma) - mx * mx
  syy = _gauss_blur(y * y, sigma) - my * my
  sxy = _gauss_blur(x * y, sigma) - mx * my
  return (2 * mx * my + _C1) / (mx * mx + my * my + _C1), (2 * sxy + _C2) / (sxx + syy + _C2)


def ms_ssim_map(out: jax.Array, clean: jax.Array, sigmas=ZHAO_SIGMAS) -> jax.Array:
  """Zhao et al.'s per-pixel MS-SSIM ``l_M * prod_j cs_j``, ``(N, H, W, C)``."""
  prod = None
  for s in sigmas:
    lum, cs = _lum_cs(out, clean, s)
    prod = cs if prod is None else prod * cs
  return lum * prod


def reconstruction(name: str, out: jax.Array, clean: jax.Array, *, alpha: float = 0.84) -> jax.Array:
  """The reconstruction loss ``name`` (module docstring) of ``out`` against ``clean``."""
  err = out - clean
  if name == "mse":
    return jnp.mean(jnp.square(err))
  if name == "l1":
    return jnp.mean(jnp.abs(err))
  if name == "ssim":
    return 1.0 - jnp.mean(metrics.ssim(out, clean, clip=False))
  if name == "ms_ssim":
    return 1.0 - jnp.mean(ms_ssim_map(out.astype(jnp.float32), clean.astype(jnp.float32)))
  if name == "mix":
    o, c = out.astype(jnp.float32), clean.astype(jnp.float32)
    l1 = _gauss_blur(jnp.abs(o - c), ZHAO_SIGMAS[-1])
    return jnp.mean(alpha * (1.0 - ms_ssim_map(o, c)) + (1.0 - alpha) * l1)
  raise ValueError(f"config.train.loss={name!r}; expected one of {RECONSTRUCTION}")


def check_config(train) -> None:
  """Clear errors, before any work, for the loss keys of ``config.train``."""
  if train.loss not in RECONSTRUCTION:
    raise ValueError(f"config.train.loss={train.loss!r}; expected one of {RECONSTRUCTION}")
  if not 0.0 <= train.loss_alpha <= 1.0:
    raise ValueError(f"config.train.loss_alpha={train.loss_alpha}; expected a weight in [0, 1]")
  switch, after = train.loss_switch_step, train.loss_after
  if switch:
    if after not in RECONSTRUCTION:
      raise ValueError(f"config.train.loss_after={after!r} (with loss_switch_step={switch}); "
                       f"expected one of {RECONSTRUCTION}")
    if switch < 0:
      raise ValueError(f"config.train.loss_switch_step={switch}; expected 0 (no switch) or 0 < step < "
                       f"config.train.steps={train.steps}")
    if switch >= train.steps:
      raise ValueError(f"config.train.loss_switch_step={switch} is beyond the run "
                       f"(config.train.steps={train.steps}); expected 0 (no switch) or 0 < step < steps")
  elif after:
    raise ValueError(f"config.train.loss_after={after!r} needs config.train.loss_switch_step > 0")


def loss_at(train, step: int) -> str:
  """The reconstruction loss of step ``step`` (0-based): ``loss``, then ``loss_after`` from
  ``loss_switch_step`` on."""
  if train.loss_switch_step and step >= train.loss_switch_step:
    return train.loss_after
  return train.loss


def asymmetric(estimate: jax.Array, true: jax.Array, alpha: float = 0.3) -> jax.Array:
  """CBDNet's asymmetric loss, ``mean(|alpha - 1[estimate < true]| * (estimate - true)**2)``.

  With ``alpha < 0.5`` an under-estimated noise level (which leaves noise in
  the output) costs ``1 - alpha`` and an over-estimate (which only smooths
  more) ``alpha`` (Guo et al. 2019: ``alpha = 0.3``).
  """
  d = estimate - true
  weight = jnp.where(d < 0, 1.0 - alpha, alpha).astype(d.dtype)
  return jnp.mean(weight * jnp.square(d))


def total_variation(m: jax.Array) -> jax.Array:
  """Squared total variation of a map, ``mean(dh**2) + mean(dv**2)`` (smooth estimated maps)."""
  dv = m[:, 1:] - m[:, :-1]
  dh = m[:, :, 1:] - m[:, :, :-1]
  zero = jnp.zeros((), m.dtype)
  return (jnp.mean(jnp.square(dv)) if dv.size else zero) + (jnp.mean(jnp.square(dh)) if dh.size else zero)
