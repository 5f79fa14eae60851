"""Denoisers (FDnCNN, DRUNet, DnCNN, FFDNet, CBDNet) in the modes ``ordinary``, ``scale_equiv``,
``norm_equiv`` and ``wrapped``.

Every model is called as ``module.apply(variables, x, sigma)`` with ``x`` of
shape ``(N, H, W, C)``, any ``H, W >= 1``, and ``sigma`` ``None`` (blind) or a
noise level in ``x``'s units: a scalar, ``(N,)`` or a map ``(N, H, W, 1)``.
The output has ``x``'s shape and dtype. Build models with :func:`create`.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, ClassVar, Optional, Sequence

import flax
import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from nedenoise_jax import ops
from nedenoise_jax.nn.layers import (MODES, PRECOMPUTED, Conv, Dtype, ResBlock, Residual,
                                  constrained_kernel,
                                  ScaleBatchNorm, UpConv, activation, check_even, conv,
                                  mode_spec)

ARCH_KWARGS = {
    "fdncnn": ("features", "depth"),
    "drunet": ("features", "blocks"),
    "dncnn": ("features", "depth"),
    "ffdnet": ("features", "depth"),
    "cbdnet": ("estimator_features", "estimator_depth", "denoiser", "features", "convs", "depth",
               "blocks"),
}
COMMON_KWARGS = ("parametrization", "dtype", "param_dtype")


def _prepare(x: jax.Array, sigma, *, channels: int, blind: bool, name: str) -> Optional[jax.Array]:
  """Validates a model's inputs; returns the noise-level map (non-blind) or None."""
  x_shape = getattr(x, "shape", None)
  if x_shape is None or len(x_shape) != 4:
    raise ValueError(f"{name}: x must have shape (N, H, W, {channels}), got shape {x_shape}")
  if x_shape[-1] != channels:
    raise ValueError(f"{name} was built for {channels} channel(s): x must have shape "
                     f"(N, H, W, {channels}), got shape {tuple(x_shape)}")
  if min(x_shape[:3]) < 1:
    raise ValueError(f"{name}: x must have N, H, W >= 1, got shape {tuple(x_shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: x must be a floating point array, got dtype {x.dtype}")
  if blind:
    if sigma is not None:
      raise ValueError(f"{name} is blind: call it with sigma=None, got a sigma of shape "
                       f"{jnp.shape(sigma)}")
    return None
  if sigma is None:
    raise ValueError(f"{name} is non-blind: pass sigma, a scalar, (N,) or (N, H, W, 1) array "
                     "in the image's units")
  noise_map = ops.sigma_map(sigma, x)
  check_map_values(noise_map, name)
  return noise_map


def check_map_values(noise_map, name: str) -> None:
  """A ``ValueError`` for negative or non-finite noise levels (on concrete arrays; traced ones pass)."""
  if isinstance(noise_map, jax.core.Tracer):
    return
  values = jnp.asarray(noise_map)
  if not bool(jnp.all(jnp.isfinite(values))):
    raise ValueError(f"{name}: sigma (the noise-level map) has NaN or infinite values; expected "
                     "finite standard deviations >= 0 in the image's units")
  if not bool(jnp.all(values >= 0)):
    raise ValueError(f"{name}: sigma (the noise-level map) has negative values (min "
                     f"{float(jnp.min(values)):.4g}); expected standard deviations >= 0")


def _with_map(x: jax.Array, noise_map: Optional[jax.Array]) -> jax.Array:
  return x if noise_map is None else jnp.concatenate([x, noise_map.astype(x.dtype)], axis=-1)


def _plain_layers(spec, h: jax.Array, kw: dict, *, features: int, depth: int, out_channels: int,
                  blind: bool, last_bias: Optional[bool], last_free: int) -> jax.Array:
  """``depth`` 3x3 convolutions ``conv_0`` ... (FDnCNN's, FFDNet's): ``features`` channels with the
  mode's activation between them, then ``out_channels``. Non-blind, the first layer's last input
  channel (the noise map) is free of the constraint; ``last_free`` such channels for the last
  layer when it is also the first. ``last_bias``: False drops the last layer's bias, None
  leaves it to the mode. With SortPool, each convolution sorts its input itself (the
  sort is fused with the reflect padding on the CPU, see layers.Conv.__call__)."""
  sort = spec.sort_pool
  for i in range(depth - 1):
    h = conv(spec, features, free_channels=0 if (i or blind) else 1, name=f"conv_{i}", **kw)(
        h, sort_input=sort and i > 0)
    if not sort:
      h = activation(spec, h)
  return conv(spec, out_channels, use_bias=last_bias, free_channels=last_free,
              name=f"conv_{depth - 1}", **kw)(h, sort_input=sort and depth > 1)


class Denoiser(nn.Module):
  """Fields every architecture shares; subclasses add their size fields and ``arch``."""

  channels: int = 1
  blind: bool = True
  mode: str = "norm_equiv"
  parametrization: ops.Parametrization = "centre"
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  def _start(self, x: jax.Array, sigma):
    """``(mode spec, noise map or None, layer kwargs)`` after validating the inputs."""
    noise_map = _prepare(x, sigma, channels=self.channels, blind=self.blind,
                         name=type(self).__name__)
    kw = dict(parametrization=self.parametrization, dtype=self.dtype, param_dtype=self.param_dtype)
    return mode_spec(self.mode), noise_map, kw


class FDnCNN(Denoiser):
  """Flexible DnCNN: ``depth`` 3x3 convolutions of ``features`` channels.

  Predicts the clean image directly (no residual learning); the last
  convolution has no bias. Non-blind: the noise-level map is an extra input
  channel (left unconstrained in ``norm_equiv``).
  """

  arch: ClassVar[str] = "fdncnn"
  features: int = 64
  depth: int = 20

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False) -> jax.Array:
    spec, noise_map, kw = self._start(x, sigma)
    h = _plain_layers(spec, _with_map(x, noise_map), kw, features=self.features, depth=self.depth,
                      out_channels=self.channels, blind=self.blind, last_bias=False, last_free=0)
    return h.astype(x.dtype)


class DRUNet(Denoiser):
  """U-Net with residual blocks (Zhang et al. 2021), ``len(features)`` levels.

  Each image is padded at the bottom/right to a multiple of
  ``2**(len(features) - 1)`` with its own mean, then cropped back.
  """

  arch: ClassVar[str] = "drunet"
  features: Sequence[int] = (64, 128, 256, 512)
  blocks: int = 4

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False) -> jax.Array:
    spec, noise_map, kw = self._start(x, sigma)
    feats = tuple(self.features)
    levels = len(feats) - 1
    xp, (h, w) = ops.pad_to_multiple(x, 2 ** levels)
    if noise_map is not None:
      noise_map, _ = ops.pad_to_multiple(noise_map, 2 ** levels)
    y = conv(spec, feats[0], free_channels=0 if self.blind else 1, name="head", **kw)(
        _with_map(xp, noise_map))
    skips = [y]
    for i in range(levels):
      for b in range(self.blocks):
        y = ResBlock(feats[i], spec, name=f"down_{i}_block_{b}", **kw)(y)
      y = conv(spec, feats[i + 1], (2, 2), strides=2, padding="valid", name=f"down_{i}_conv", **kw)(y)
      skips.append(y)
    for b in range(self.blocks):
      y = ResBlock(feats[-1], spec, name=f"body_block_{b}", **kw)(y)
    for i in reversed(range(levels)):
      y = Residual(spec, self.param_dtype, name=f"skip_{i + 1}")(y, skips[i + 1])
      y = UpConv(feats[i], spec, name=f"up_{i}_conv", **kw)(y)
      for b in range(self.blocks):
        y = ResBlock(feats[i], spec, name=f"up_{i}_block_{b}", **kw)(y)
    y = Residual(spec, self.param_dtype, name="skip_0")(y, skips[0])
    y = conv(spec, self.channels, name="tail", **kw)(y)
    return y[:, :h, :w, :].astype(x.dtype)


class DnCNN(Denoiser):
  """DnCNN (Zhang et al. 2017): output = input - predicted noise.

  * ``ordinary``: conv+ReLU, ``depth - 2`` x (conv, BatchNorm, ReLU), conv.
  * ``scale_equiv`` (BF-CNN, Mohan et al. 2020): no bias anywhere, BatchNorm
    without mean subtraction and without beta.
  * ``norm_equiv``: no BatchNorm (batch statistics are not NE), affine
    convolutions and SortPool, and a last convolution whose filters sum to
    **0** (``constraint="zero_sum"``). The noise predictor ``g`` is then
    shift-invariant and scale-equivariant, ``g(a*x + b) = a*g(x)``, so
    ``x - g(x)`` is NE; a sum-to-1 last layer would instead give
    ``f(x + b) = f(x)``.

  BatchNorm uses batch statistics when called with ``train=True`` (apply with
  ``mutable=["batch_stats"]``) and running averages otherwise.
  """

  arch: ClassVar[str] = "dncnn"
  features: int = 64
  depth: int = 17

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False) -> jax.Array:
    spec, noise_map, kw = self._start(x, sigma)
    h = conv(spec, self.features, free_channels=0 if self.blind else 1, name="conv_0", **kw)(
        _with_map(x, noise_map))
    h = activation(spec, h)
    for i in range(1, self.depth - 1):
      h = conv(spec, self.features, use_bias=spec.bias and spec.batch_norm is None,
               name=f"conv_{i}", **kw)(h)
      if spec.batch_norm == "full":
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, param_dtype=self.param_dtype, name=f"bn_{i}")(h)
      elif spec.batch_norm == "scale":
        h = ScaleBatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"bn_{i}")(
            h, use_running_average=not train)
      h = activation(spec, h)
    last = f"conv_{self.depth - 1}"
    if spec.constraint == "affine":
      noise = Conv(self.channels, constraint="zero_sum", padding="reflect", kernel_scale=1.0,
                   name=last, **kw)(h)
    else:
      noise = conv(spec, self.channels, name=last, **kw)(h)
    return (x - noise.astype(x.dtype)).astype(x.dtype)


def _pad_even(x: jax.Array) -> jax.Array:
  """Pads H and W at the bottom/right to even sizes by repeating the last row/column.

  A copy of pixels: it commutes with ``x -> a*x + b`` and depends only on
  neighbouring pixels (tiles of an image are padded as the image is).
  """
  ph, pw = x.shape[1] % 2, x.shape[2] % 2
  return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else x


def _rms_pool2(m: jax.Array) -> jax.Array:
  """``sqrt(mean(m**2))`` over 2x2 blocks of a noise map: the standard deviation of the
  block's average variance (scales with the map; finite gradients at 0)."""
  n, h, w, c = m.shape
  ms = jnp.mean(jnp.square(m).reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))
  pos = ms > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, ms, 1)), 0).astype(m.dtype)


class FFDNet(Denoiser):
  """FFDNet (Zhang, Zuo & Zhang 2018): the image is pixel-unshuffled by 2, the
  noise-level map (pooled to that resolution, root mean square) concatenated
  as an extra channel, ``depth`` 3x3 convolutions of ``features`` channels
  applied there, and the ``4*channels`` outputs pixel-shuffled back.

  Full size: gray ``features=64, depth=15`` (485,316 parameters in
  ``ordinary``, as KAIR's ``FFDNet(in_nc=1, nc=64, nb=15)``), colour
  ``features=96, depth=12`` (852,108, KAIR's ``in_nc=3, nc=96, nb=12``).
  Odd sizes are padded by repeating the last row/column, then cropped. In
  ``norm_equiv`` the map channel is free and the shuffles are permutations,
  so the model is exactly NE. ``blind=True`` drops the map (a blind model).
  """

  arch: ClassVar[str] = "ffdnet"
  blind: bool = False
  features: int = 64
  depth: int = 15

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False) -> jax.Array:
    spec, noise_map, kw = self._start(x, sigma)
    h, w = x.shape[1:3]
    z = ops.pixel_unshuffle(_pad_even(x), 2)
    if noise_map is not None:
      z = jnp.concatenate([z, _rms_pool2(_pad_even(noise_map)).astype(z.dtype)], axis=-1)
    z = _plain_layers(spec, z, kw, features=self.features, depth=self.depth,
                      out_channels=4 * self.channels, blind=self.blind, last_bias=None,
                      last_free=0 if (self.depth > 1 or self.blind) else 1)
    return ops.pixel_shuffle(z, 2)[:, :h, :w, :].astype(x.dtype)


class NoiseEstimator(nn.Module):
  """CBDNet's noise-estimation subnetwork: ``depth`` 3x3 convolutions, a map ``(N, H, W, 1)``.

  * ``ordinary``: conv + ReLU layers, the last one too (Guo et al. 2019);
  * ``scale_equiv``: the same without biases: ``m(a*x) = a*m(x)``;
  * ``norm_equiv``: affine convolutions and SortPool, then a last convolution
    whose filters sum to **0**, and a magnitude: ``m(a*x + b) = a*m(x)``
    for ``a > 0`` (scale-equivariant, shift-invariant, non-negative).
  """

  features: int = 32
  depth: int = 5
  mode: str = "norm_equiv"
  parametrization: ops.Parametrization = "centre"
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spec = mode_spec(self.mode)
    kw = dict(parametrization=self.parametrization, dtype=self.dtype, param_dtype=self.param_dtype)
    h, sort = x, spec.sort_pool
    for i in range(self.depth - 1):
      h = conv(spec, self.features, name=f"conv_{i}", **kw)(h, sort_input=sort and i > 0)
      if not sort:
        h = activation(spec, h)
    last = f"conv_{self.depth - 1}"
    if spec.constraint == "affine":
      s = Conv(1, constraint="zero_sum", padding="reflect", kernel_scale=1.0, name=last, **kw)(
          h, sort_input=sort and self.depth > 1)
      return jnp.abs(s)
    return nn.relu(conv(spec, 1, name=last, **kw)(h))


def _avg_pool2(x: jax.Array) -> jax.Array:
  """The mean of each 2x2 block (H and W even): weights summing to 1, so NE."""
  n, h, w, c = x.shape
  return jnp.mean(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4)).astype(x.dtype)


def check_unet(features: Sequence[int], convs: Sequence[int]) -> None:
  """A ``ValueError`` unless the U-Net has at least 2 scales and a positive count per scale."""
  if len(features) < 2:
    raise ValueError(f"the CBDNet U-Net takes features=(F0, F1, ...), a width per scale, at "
                     f"least 2; got features={tuple(features)}")
  if len(convs) != len(features) or min(convs) < 1:
    raise ValueError(f"the CBDNet U-Net takes convs, one count >= 1 per scale like features="
                     f"{tuple(features)}; got convs={tuple(convs)}")


class UNet(Denoiser):
  """CBDNet's non-blind subnetwork (Guo et al. 2019): a plain U-Net on the image and its
  noise map, with a global residual.

  ``len(features)`` scales: at scale ``i``, ``convs[i]`` 3x3 convolutions of ``features[i]``
  channels on the way down and again on the way up (the coarsest scale once), the mode's
  activation after every one (the paper: ``features=(64, 128, 256)``, ``convs=(2, 3, 6)``,
  so 2, 3, 6 down and 3, 2 up), 2x2 average pooling down, a 2x2 stride-2 transposed convolution up, the
  upsampled features merged with the same scale's by the mode's residual (a sum, affine in
  ``norm_equiv``), a last 1x1 convolution to ``channels`` merged with the input by the
  mode's residual. Average pooling has weights summing to 1 and the transposed convolution
  is an :class:`UpConv`, so ``norm_equiv`` is NE. Images are padded at the bottom/right to
  a multiple of ``2**(len(features) - 1)`` with their own mean, then cropped back.
  """

  arch: ClassVar[str] = "unet"
  blind: bool = False
  features: Sequence[int] = (64, 128, 256)
  convs: Sequence[int] = (2, 3, 6)

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False) -> jax.Array:
    spec, noise_map, kw = self._start(x, sigma)
    feats, convs = tuple(self.features), tuple(self.convs)
    check_unet(feats, convs)
    levels = len(feats) - 1
    xp, (h, w) = ops.pad_to_multiple(x, 2 ** levels)
    if noise_map is not None:
      noise_map, _ = ops.pad_to_multiple(noise_map, 2 ** levels)

    def stage(y, features, count, name, first_free=0):
      for j in range(count):  # with SortPool, each convolution sorts its input itself
        y = conv(spec, features, free_channels=first_free if j == 0 else 0, name=f"{name}_{j}",
                 **kw)(y, sort_input=spec.sort_pool and j > 0)
        if not spec.sort_pool:
          y = activation(spec, y)
      return activation(spec, y) if spec.sort_pool else y

    y = stage(_with_map(xp, noise_map), feats[0], convs[0], "down_0", 0 if self.blind else 1)
    skips = [y]
    for i in range(1, levels + 1):
      y = stage(_avg_pool2(y), feats[i], convs[i], f"down_{i}")
      skips.append(y)
    for i in reversed(range(levels)):
      y = UpConv(feats[i], spec, name=f"up_{i}_conv", **kw)(y)
      y = Residual(spec, self.param_dtype, name=f"skip_{i}")(y, skips[i])
      y = stage(y, feats[i], convs[i], f"up_{i}")
    tail = conv(spec, self.channels, (1, 1), padding="valid", name="tail", **kw)
    y = Residual(spec, self.param_dtype, name="residual")(xp, branch=lambda scale: tail(y, scale))
    return y[:, :h, :w, :].astype(x.dtype)


DENOISERS = ("unet", "drunet", "fdncnn", "ffdnet")


class CBDNet(Denoiser):
  """CBDNet (Guo et al. 2019): a noise estimator, then a non-blind denoiser fed its map.

  ``y = D(x, map_scale * E(x))`` with ``E`` a :class:`NoiseEstimator`
  (``estimator_features x estimator_depth``, 32 x 5 at full size) and ``D``
  a non-blind ``denoiser``: ``"unet"`` (the paper's U-Net, :class:`UNet`, the
  default; ``features`` and ``convs`` per scale), ``"drunet"``  (``features`` per level,
  ``blocks`` residual blocks per level), ``"fdncnn"`` or ``"ffdnet"``
  (``features=(F,)`` and ``depth``). ``map_scale`` (call argument) is the paper's interactive
  correction of the estimated map; ``return_map=True`` also returns ``E(x)``
  (for the asymmetric and total-variation losses of training). A non-blind
  CBDNet (``blind=False``) takes the map as ``sigma`` and has no estimator.
  In ``norm_equiv`` both parts are built from NE layers and ``E`` is
  scale-equivariant and shift-invariant, so the blind model is NE.
  """

  arch: ClassVar[str] = "cbdnet"
  blind: bool = True
  estimator_features: int = 32
  estimator_depth: int = 5
  denoiser: str = "unet"
  features: Sequence[int] = (64, 128, 256)
  convs: Sequence[int] = (2, 3, 6)
  depth: int = 17
  blocks: int = 2

  def _denoiser(self) -> nn.Module:
    common = dict(mode=self.mode, blind=False, channels=self.channels,
                  parametrization=self.parametrization, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="denoiser")
    feats = tuple(self.features)
    if self.denoiser == "unet":
      return UNet(features=feats, convs=tuple(self.convs), **common)
    if self.denoiser == "drunet":
      return DRUNet(features=feats, blocks=self.blocks, **common)
    return ARCHS[self.denoiser](features=feats[0], depth=self.depth, **common)

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False, map_scale=1.0,
               return_map: bool = False):
    noise_map = _prepare(x, sigma, channels=self.channels, blind=self.blind, name="CBDNet")
    if self.blind:
      noise_map = NoiseEstimator(self.estimator_features, self.estimator_depth, self.mode,
                                 self.parametrization, self.dtype, self.param_dtype,
                                 name="estimator")(x).astype(x.dtype)
    given = noise_map * jnp.asarray(map_scale).astype(noise_map.dtype)
    y = self._denoiser()(x, given, train=train).astype(x.dtype)
    return (y, noise_map) if return_map else y


def _normalization(x: jax.Array):
  """``(mu, s, flat)``: each image's mean and standard deviation over H, W, C, and
  whether it is constant (then ``s = 1``), all ``(N, 1, 1, 1)``."""
  mu = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  var = jnp.mean(jnp.square(x - mu), axis=(1, 2, 3), keepdims=True)
  # Exactly constant images (float rounding makes their variance tiny, not 0)
  # and variances that underflow are returned unchanged.
  flat = (jnp.max(x, axis=(1, 2, 3), keepdims=True) == jnp.min(x, axis=(1, 2, 3), keepdims=True)
          ) | (var <= 0)
  # sqrt only of positive values: keeps gradients finite on constant images.
  return mu, jnp.sqrt(jnp.where(flat, jnp.ones_like(var), var)), flat


class AroundInner:
  """For modules built around a denoiser ``inner``: its channel count and blindness."""

  @property
  def channels(self) -> int:
    return self.inner.channels

  @property
  def blind(self) -> bool:
    return self.inner.blind


class Wrapped(AroundInner, nn.Module):
  """Normalize -> backbone -> denormalize (Saied & Fleuret 2026).

  ``f(y) = s * g((y - mu) / s) + mu`` with ``mu`` and ``s`` the mean and
  standard deviation of each image over H, W and C; a non-blind backbone gets
  ``sigma / s``. NE for any backbone. A constant image (``s == 0``) is
  returned unchanged.
  """

  inner: nn.Module

  @nn.compact
  def __call__(self, x: jax.Array, sigma=None, *, train: bool = False, **kwargs):
    """``kwargs`` go to the backbone (CBDNet's ``map_scale``, ``return_map``: the
    estimated map is returned in ``x``'s units)."""
    noise_map = _prepare(x, sigma, channels=self.inner.channels, blind=self.inner.blind,
                         name=f"wrapped {type(self.inner).__name__}")
    mu, scale, flat = _normalization(x)
    z = (x - mu) / scale
    inner_sigma = None if noise_map is None else noise_map / scale
    out = self.inner(z, inner_sigma, train=train, **kwargs)
    est = None
    if kwargs.get("return_map"):
      out, est = out
      est = jnp.where(flat, jnp.zeros_like(est), est * scale).astype(x.dtype)
    y = jnp.where(flat, x, out * scale + mu).astype(x.dtype)
    return y if est is None else (y, est)


ARCHS = {cls.arch: cls for cls in (FDnCNN, DRUNet, DnCNN, FFDNet, CBDNet)}


def estimate_map(module: nn.Module, variables, x: jax.Array) -> jax.Array:
  """The noise map ``(N, H, W, 1)`` a blind CBDNet (wrapped or not) estimates for ``x``.

  Runs only the estimator (not the denoiser); the wrapped model's estimate
  is taken on the normalized image and scaled back, as in its ``__call__``.
  """
  if not estimates_noise(module):
    raise ValueError(f"{type(module).__name__} does not estimate noise maps; expected a blind "
                     "cbdnet (models.create('cbdnet', ...))")
  wrapped = isinstance(module, Wrapped)
  inner = module.inner if wrapped else module
  params = variables["params"]["inner"] if wrapped else variables["params"]
  _prepare(x, None, channels=inner.channels, blind=True, name="CBDNet estimator")
  est = NoiseEstimator(inner.estimator_features, inner.estimator_depth, inner.mode,
                       inner.parametrization, inner.dtype, inner.param_dtype)
  run = lambda z: est.apply({"params": params["estimator"]}, z).astype(x.dtype)  # noqa: E731
  if not wrapped:
    return run(x)
  mu, scale, flat = _normalization(x)
  return jnp.where(flat, 0, run((x - mu) / scale) * scale).astype(x.dtype)


def estimates_noise(module: nn.Module) -> bool:
  """Whether ``module`` estimates its own noise map (a blind CBDNet, wrapped or not):
  it then takes ``map_scale`` and ``return_map`` call arguments."""
  inner = module.inner if isinstance(module, Wrapped) else module
  return isinstance(inner, CBDNet) and inner.blind


def _check_size(arch: str, key: str, value: Any, minimum: int) -> None:
  """A ``ValueError`` naming ``key`` unless ``value`` is an integer >= ``minimum`` (or a non-empty
  sequence of them, for the per-scale widths and counts)."""
  values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  ok = values and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
                      for v in values)
  if not ok:
    raise ValueError(f"{arch} {key}={value!r}: expected {'integers' if len(values) > 1 else 'an integer'} "
                     f">= {minimum}")


def create(arch: str, *, mode: str, blind: Optional[bool] = None, channels: int = 1,
           **arch_kwargs: Any) -> nn.Module:
  """Builds a denoiser.

  Args:
    arch: ``"fdncnn"``, ``"drunet"``, ``"dncnn"``, ``"ffdnet"`` or ``"cbdnet"``.
    mode: ``"ordinary"``, ``"scale_equiv"``, ``"norm_equiv"`` or ``"wrapped"``.
    blind: if False the model takes a noise level ``sigma``; default False
      for ffdnet, True for the others (a blind cbdnet estimates its map).
    channels: image channels (1 gray, 3 colour).
    **arch_kwargs: fdncnn ``features=64, depth=20``; drunet
      ``features=(64, 128, 256, 512), blocks=4``; dncnn ``features=64,
      depth=17``; ffdnet ``features=64, depth=15`` (colour at full size:
      96, 12); cbdnet ``estimator_features=32, estimator_depth=5,
      denoiser="unet", features=(64, 128, 256), convs=(2, 3, 6)`` (or ``denoiser="drunet"``
      with ``blocks=2``, or ``"fdncnn"``/``"ffdnet"`` with ``features=(F,)``
      and ``depth``); all: ``parametrization`` (``"centre"`` or ``"roll"``),
      ``dtype`` (compute dtype, e.g. ``jnp.bfloat16``), ``param_dtype``.

  Returns:
    A ``flax.linen.Module``: ``variables = module.init(rng, x, sigma)``,
    ``y = module.apply(variables, x, sigma)``.
  """
  if arch not in ARCHS:
    raise ValueError(f"unknown arch {arch!r}; expected one of {tuple(ARCHS)}")
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
  allowed = ARCH_KWARGS[arch] + COMMON_KWARGS
  unknown = sorted(set(arch_kwargs) - set(allowed))
  if unknown:
    raise ValueError(f"unknown keyword(s) {unknown} for arch {arch!r}; expected some of {allowed}")
  if not isinstance(channels, int) or channels < 1:
    raise ValueError(f"channels must be a positive int, got {channels!r}")
  for key in ("features", "depth", "blocks", "estimator_features", "estimator_depth", "convs"):
    if key in arch_kwargs:
      _check_size(arch, key, arch_kwargs[key], minimum=0 if key == "blocks" else 1)
  cls = ARCHS[arch]
  if blind is None:
    blind = cls.blind
  if "features" in arch_kwargs and arch in ("drunet", "cbdnet"):
    f = arch_kwargs["features"]
    arch_kwargs["features"] = (int(f),) if isinstance(f, int) else tuple(int(v) for v in f)
  if arch == "cbdnet":
    den = arch_kwargs.get("denoiser", cls.denoiser)
    if den not in DENOISERS:
      raise ValueError(f"unknown cbdnet denoiser {den!r}; expected one of {DENOISERS}")
    feats = arch_kwargs.get("features", cls.features)
    if den in ("fdncnn", "ffdnet") and len(feats) != 1:
      raise ValueError(f"cbdnet with denoiser={den!r} takes features=(F,), one width; got {feats}")
    if "convs" in arch_kwargs:
      c = arch_kwargs["convs"]
      arch_kwargs["convs"] = (int(c),) if isinstance(c, int) else tuple(int(v) for v in c)
    if den == "unet":
      check_unet(feats, arch_kwargs.get("convs", cls.convs))
  if arch_kwargs.get("parametrization", "centre") not in ops.PARAMETRIZATIONS:
    raise ValueError(f"unknown parametrization {arch_kwargs['parametrization']!r}; "
                     f"expected one of {ops.PARAMETRIZATIONS}")
  inner_mode = "ordinary" if mode == "wrapped" else mode
  if inner_mode == "norm_equiv":
    check_even(arch_kwargs.get("features", cls.features), f"{arch} features")
    if arch == "cbdnet" and blind:
      check_even(arch_kwargs.get("estimator_features", cls.estimator_features),
                 "cbdnet estimator_features")
  module = cls(mode=inner_mode, blind=bool(blind), channels=channels, **arch_kwargs)
  return Wrapped(inner=module) if mode == "wrapped" else module


def describe(module: nn.Module) -> dict:
  """The :func:`create` arguments that rebuild ``module`` (JSON-serializable)."""
  wrapped = isinstance(module, Wrapped)
  inner = module.inner if wrapped else module
  if type(inner) not in ARCHS.values():
    raise ValueError(f"cannot describe {type(inner).__name__}; expected a model built by models.create")
  desc = {"arch": inner.arch, "mode": "wrapped" if wrapped else inner.mode,
          "blind": inner.blind, "channels": inner.channels}
  for key in ARCH_KWARGS[inner.arch]:
    value = getattr(inner, key)
    desc[key] = list(value) if isinstance(value, (tuple, list)) else value
  desc["parametrization"] = inner.parametrization
  desc["dtype"] = None if inner.dtype is None else jnp.dtype(inner.dtype).name
  desc["param_dtype"] = jnp.dtype(inner.param_dtype).name
  return desc


def from_description(desc: dict) -> nn.Module:
  """Inverse of :func:`describe`."""
  d = dict(desc)
  try:
    arch, mode, blind = d.pop("arch"), d.pop("mode"), d.pop("blind")
  except KeyError as e:
    raise ValueError(f"model description lacks key {e.args[0]!r}: {desc}") from None
  channels = d.pop("channels", 1)
  for key in ("dtype", "param_dtype"):
    if d.get(key) is not None:
      d[key] = jnp.dtype(d[key])
  if d.get("dtype", 0) is None:
    d.pop("dtype")
  return create(arch, mode=mode, blind=blind, channels=channels, **d)


def effective_kernels(module: nn.Module, variables, x: Optional[jax.Array] = None, sigma=None):
  """The kernels every convolution of ``module`` applies, after the constraint.

  Returns ``(kernels, sums)``: dicts from the layer path (``"down_0_block_1/conv2"``)
  to the HWIO kernel, and, for constrained layers, to each filter's sum over
  the constrained input channels and taps (1 for affine, 0 for zero-sum).
  """
  if x is None:
    x = jnp.zeros((1, 8, 8, module.channels), jnp.float32)
    sigma = None if module.blind else 0.1
  apply = jax.jit(lambda v, x, s: module.apply(v, x, s, mutable=["intermediates"])[1])
  state = apply(variables, x, sigma)
  kernels, sums = {}, {}
  for path, value in flax.traverse_util.flatten_dict(state["intermediates"]).items():
    name = "/".join(path[:-1])
    (kernels if path[-1] == "effective_kernel" else sums)[name] = value[0]
  return kernels, sums


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _precompute_kernel(theta, constraint, free_channels, parametrization, from_parameters):
  # One program per kernel shape and configuration, kept across calls (a
  # jit of all of a model's layers at once compiled for ~1 s each time).
  work = jnp.promote_types(theta.dtype, jnp.float32)
  return constrained_kernel(theta, work, constraint, free_channels, parametrization,
                            from_parameters).astype(theta.dtype)


def prepare_inference(module: nn.Module, variables, x: Optional[jax.Array] = None, sigma=None):
  """``(module, variables)`` for inference, with every constrained kernel computed once.

  A constrained convolution forms its kernel from the stored parameters on
  every call (``ops.affine_kernel``: a pass over each kernel, 32M parameters
  for DRUNet). For inference the kernels do not change, so this returns a
  copy of ``module`` with ``parametrization="precomputed"`` and variables
  holding the constrained kernels themselves: the same outputs (the same
  kernels, computed by the same code), without that work per call.
  ``denoise`` uses it. The layers are found by tracing ``module`` (no
  compilation of the network); ``x``/``sigma`` are an example input if the
  default (8x8, the module's channels) does not suit it. Models without
  constrained convolutions are returned as they are. The result is for
  inference only: training it would leave the constraint unenforced.
  """
  if getattr(module, "parametrization", None) in (None, PRECOMPUTED):
    return module, variables
  if x is None:
    x = jnp.zeros((1, 8, 8, module.channels), jnp.float32)
    sigma = None if module.blind else 0.1
  found = {}

  def record(next_fun, args, kwargs, context):
    m = context.module
    if context.method_name == "effective_kernel" and m.constraint is not None:
      found[m.path] = (m.constraint, m.free_channels, m.parametrization, m.from_parameters())
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v: module.apply(v, x, sigma), variables)
  if not found:
    return module, variables
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
  for path, config in found.items():
    params[path + ("kernel",)] = _precompute_kernel(params[path + ("kernel",)], *config)
  return (module.clone(parametrization=PRECOMPUTED),
          {**variables, "params": flax.traverse_util.unflatten_dict(params)})


def count_params(variables) -> int:
  """Number of scalars in ``variables["params"]``."""
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(variables["params"]))
