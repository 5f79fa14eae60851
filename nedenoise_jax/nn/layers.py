"""Flax linen layers for the four equivariance modes.

The mode of a network is resolved once, by :func:`mode_spec`, into a
:class:`ModeSpec` that every layer reads; layers never branch on the mode name.

======================  ==========  ===============  ===========  ==================
mode                    conv bias   conv constraint  padding      activation / sum
======================  ==========  ===============  ===========  ==================
``ordinary``            yes         none             zeros        ReLU / ``x + y``
``scale_equiv``         no          none             zeros        ReLU / ``x + y``
``norm_equiv``          no          sums to 1        reflect      SortPool / affine
``wrapped``             (the ``ordinary`` network inside a normalize/denormalize wrapper)
======================  ==========  ===============  ===========  ==================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nedenoise_jax import kernels, ops

Dtype = Any
MODES = ("ordinary", "scale_equiv", "norm_equiv", "wrapped")


@dataclasses.dataclass(frozen=True)
class ModeSpec:
  """What an equivariance mode means for each building block."""

  bias: bool
  constraint: Optional[str]  # None | "affine"
  padding: str  # "zeros" | "reflect"
  sort_pool: bool
  affine_residual: bool
  batch_norm: Optional[str]  # "full" | "scale" | None (DnCNN only)


_SPECS = {
    "ordinary": ModeSpec(bias=True, constraint=None, padding="zeros", sort_pool=False,
                         affine_residual=False, batch_norm="full"),
    "scale_equiv": ModeSpec(bias=False, constraint=None, padding="zeros", sort_pool=False,
                            affine_residual=False, batch_norm="scale"),
    "norm_equiv": ModeSpec(bias=False, constraint="affine", padding="reflect", sort_pool=True,
                           affine_residual=True, batch_norm=None),
}


def mode_spec(mode: str) -> ModeSpec:
  """Resolves a mode name (not ``wrapped``, which wraps ``ordinary``) to its spec."""
  if mode not in _SPECS:
    hint = " ('wrapped' is built by models.create around an ordinary network)" if mode == "wrapped" else ""
    raise ValueError(f"unknown mode {mode!r}; expected one of {tuple(_SPECS)}{hint}")
  return _SPECS[mode]


def _fan_in_normal(scale: float) -> Callable:
  return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def affine_init(free_channels: int = 0, total: float = 1.0, scale: float = 1.0) -> Callable:
  """Initializer for constrained kernels: fan-in normal, projected to sum to ``total``.

  The random part keeps the usual variance; each filter's constrained part is
  then shifted so that it sums to ``total``. The stored value of the derived
  (anchor) tap therefore equals its effective value at initialization.
  """
  base = _fan_in_normal(scale)

  def init(key, shape, dtype=jnp.float32):
    w = base(key, shape, dtype)
    cin = shape[2]
    con = w[:, :, : cin - free_channels, :]
    n = shape[0] * shape[1] * (cin - free_channels)
    con = con - jnp.mean(con, axis=(0, 1, 2), keepdims=True) + total / n
    return jnp.concatenate([con, w[:, :, cin - free_channels:, :]], axis=2)

  return init


def _compute_dtype(x: jax.Array, dtype: Optional[Dtype]) -> Dtype:
  return x.dtype if dtype is None else dtype


# The parametrization of a convolution whose stored kernel is the constrained
# kernel itself (computed once by models.prepare_inference), not parameters
# of it: the constraint is not applied again.
PRECOMPUTED = "precomputed"


def constraint_total(constraint: str) -> float:
  """What each filter of a constrained kernel sums to: 1 (``"affine"``) or 0 (``"zero_sum"``)."""
  return 1.0 if constraint == "affine" else 0.0


def constrained_kernel(theta: jax.Array, dtype: Dtype, constraint: Optional[str], free_channels: int = 0,
                       parametrization: str = "centre", from_parameters: bool = False) -> jax.Array:
  """:meth:`Conv.effective_kernel` for a convolution of that configuration.

  ``from_parameters``: the convolution takes the parameters itself
  (:func:`kernels.affine_conv2d`, where a backend may form the kernel inside
  the call); the kernel is then formed by :func:`kernels.affine_kernel`, the
  same code, so that it is the one used, bit for bit. Otherwise by
  :func:`ops.affine_kernel`, which the convolution then uses.
  """
  if constraint is None or parametrization == PRECOMPUTED:
    return theta.astype(dtype)
  work = jnp.promote_types(theta.dtype, dtype)
  form = kernels.affine_kernel if from_parameters else ops.affine_kernel
  k = form(theta.astype(work), free_channels=free_channels, total=constraint_total(constraint),
           parametrization=parametrization)
  return k.astype(dtype)


class Conv(nn.Module):
  """2-D convolution, NHWC in and out, with optional kernel constraint.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)``.
    strides: spatial stride (both axes).
    use_bias: add a learned bias (``ordinary`` mode only).
    padding: ``"zeros"`` or ``"reflect"`` (both ``SAME``), or ``"valid"``.
    constraint: ``None``, ``"affine"`` (each filter sums to 1 over the
      constrained input channels and taps) or ``"zero_sum"`` (sums to 0).
    free_channels: trailing input channels excluded from the constraint.
    parametrization: ``"centre"`` or ``"roll"``, see :func:`ops.affine_kernel`;
      or :data:`PRECOMPUTED`: the stored kernel is already the constrained one
      and is used as it is (``models.prepare_inference``).
    dtype: compute dtype (``None``: the input's). The constrained kernel is
      formed in at least float32 before the cast, so its sums stay exact.
    param_dtype: dtype of the stored parameters.
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  use_bias: bool = False
  padding: Literal["zeros", "reflect", "valid"] = "zeros"
  constraint: Optional[Literal["affine", "zero_sum"]] = None
  free_channels: int = 0
  parametrization: ops.Parametrization = "centre"
  kernel_scale: float = 2.0
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  def effective_kernel(self, theta: jax.Array, dtype: Dtype) -> jax.Array:
    """The kernel the convolution uses, from the stored parameters."""
    return constrained_kernel(theta, dtype, self.constraint, self.free_channels, self.parametrization,
                              self.from_parameters())

  def from_parameters(self) -> bool:
    """Whether this is an affine, reflect-padded convolution computed from its parameters
    (:func:`kernels.affine_conv2d`): constrained, ``centre``, wider than 1x1."""
    return (self.constraint is not None and self.parametrization == "centre" and self.padding == "reflect"
            and max(self.kernel_size) > 1)

  @nn.compact
  def __call__(self, x: jax.Array, scale: Optional[jax.Array] = None, *, sort_input: bool = False) -> jax.Array:
    """Convolves ``x``, or ``ops.sort_pool(x)`` with ``sort_input`` (the previous layer's NE activation).

    ``scale``: an optional scalar multiplying the kernel after the constraint.
    """
    cin = x.shape[-1]
    kh, kw = self.kernel_size
    shape = (kh, kw, cin, self.features)
    if self.constraint is None:
      init = _fan_in_normal(self.kernel_scale)
    elif self.parametrization == "centre":
      init = affine_init(self.free_channels, constraint_total(self.constraint),
                         self.kernel_scale)
    else:
      init = _fan_in_normal(self.kernel_scale / 2)  # roll doubles the variance
    theta = self.param("kernel", init, shape, self.param_dtype)
    dtype = _compute_dtype(x, self.dtype)
    kernel = self.effective_kernel(theta, dtype)
    # Recorded only when "intermediates" is mutable (see models.effective_kernels).
    self.sow("intermediates", "effective_kernel", kernel)
    if self.constraint is not None:
      self.sow("intermediates", "kernel_sums",
               ops.kernel_sums(kernel, free_channels=self.free_channels))
    x = x.astype(dtype)
    if self.from_parameters() and theta.dtype == dtype:
      # The affine convolution from its parameters: a backend may form the
      # kernel inside the convolution (kernels.affine_conv2d).
      y = kernels.affine_conv2d(x, theta, None if scale is None else jnp.asarray(scale).astype(dtype),
                                self.strides, ops.same_padding(self.kernel_size),
                                free_channels=self.free_channels, total=constraint_total(self.constraint),
                                sort_input=sort_input)
      return self._add_bias(y)
    if scale is not None:
      kernel = kernel * jnp.asarray(scale).astype(kernel.dtype)
    if self.padding == "valid":
      pad = "VALID"
    elif self.padding == "zeros":
      pad = ops.same_padding(self.kernel_size)
    elif self.padding == "reflect":
      pad = ops.same_padding(self.kernel_size)
    else:
      raise ValueError(f"unknown padding {self.padding!r}; expected 'zeros', 'reflect' or 'valid'")
    pad_mode = "reflect" if self.padding == "reflect" else "zeros"
    if sort_input:
      y = kernels.sort_pool_conv2d(x, kernel, self.strides, pad, pad_mode=pad_mode)
    else:
      y = kernels.conv2d(x, kernel, self.strides, pad, pad_mode=pad_mode)
    return self._add_bias(y)

  def _add_bias(self, y: jax.Array) -> jax.Array:
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
      y = ops.bias_add(y, bias)
    return y


class AffineConv(Conv):
  """Affine-constrained convolution: no bias, every filter sums to 1, reflect padding.

  With ``free_channels=1`` the last input channel (the noise-level map) is
  left free. ``AffineConv(..)(a*x + b) == a*AffineConv(..)(x) + b``.
  """

  constraint: Optional[Literal["affine", "zero_sum"]] = "affine"
  padding: Literal["zeros", "reflect", "valid"] = "reflect"
  kernel_scale: float = 1.0  # SortPool keeps the second moment, unlike ReLU


class SortPool(nn.Module):
  """Sorts adjacent channel pairs into (min, max): the NE activation."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return kernels.sort_pool(x)


class AffineResidual(nn.Module):
  """``alpha*x + (1-alpha)*y`` with one learned scalar ``alpha`` (initialised at 0.5).

  Called as ``(x, y)``, or as ``(x, branch=f)`` where ``f(scale)`` computes
  ``y`` with its last linear map (a convolution's kernel) multiplied by
  ``scale``: the result is then ``alpha*x + f(1-alpha)``, the same map with
  ``(1-alpha)`` folded into that kernel (a filter summing to ``1-alpha`` keeps
  the whole NE). In the backward pass the incoming gradient then goes to the
  convolution as it is, instead of being scaled and written out, and
  ``alpha``'s gradient is ``sum(g*x)`` plus a sum over the kernel (NE
  DRUNet's training step: 2.79 to 2.69 s on a 2-core AVX-512 CPU).
  """

  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: Optional[jax.Array] = None, *,
               branch: Optional[Callable[[Optional[jax.Array]], jax.Array]] = None) -> jax.Array:
    if (y is None) == (branch is None):
      raise ValueError("AffineResidual takes either y or branch")
    alpha = self.param("alpha", nn.initializers.constant(0.5), (), self.param_dtype)
    a = alpha.astype(x.dtype)
    if branch is not None:
      return kernels.scale_add(x, branch(1 - a), a)
    return kernels.affine_combination(x, y, a)


class Residual(nn.Module):
  """``x + y`` (``ordinary``, ``scale_equiv``) or :class:`AffineResidual` (``norm_equiv``).

  ``y`` is given, or computed by ``branch(scale)`` as in :class:`AffineResidual`
  (``scale`` is ``None`` in the modes without one).
  """

  spec: ModeSpec
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: Optional[jax.Array] = None, *,
               branch: Optional[Callable[[Optional[jax.Array]], jax.Array]] = None) -> jax.Array:
    if (y is None) == (branch is None):
      raise ValueError("Residual takes either y or branch")
    if self.spec.affine_residual:
      return AffineResidual(param_dtype=self.param_dtype, name="affine")(x, y, branch=branch)
    return x + (branch(None) if branch is not None else y)


def activation(spec: ModeSpec, x: jax.Array) -> jax.Array:
  """ReLU, or SortPool (adjacent pairs, as in the paper)."""
  return kernels.sort_pool(x) if spec.sort_pool else nn.relu(x)


def conv(spec: ModeSpec, features: int, kernel_size=(3, 3), *, strides: int = 1,
         padding: Optional[str] = None, use_bias: Optional[bool] = None, free_channels: int = 0,
         parametrization: ops.Parametrization = "centre", dtype=None, param_dtype=jnp.float32,
         name: Optional[str] = None) -> Conv:
  """The convolution a mode uses; ``padding``/``use_bias`` override the mode's choice."""
  common = dict(features=features, kernel_size=tuple(kernel_size), strides=strides, dtype=dtype,
                param_dtype=param_dtype, name=name)
  if spec.constraint == "affine":
    return AffineConv(padding=padding or "reflect", free_channels=free_channels,
                      parametrization=parametrization, **common)
  return Conv(padding=padding or spec.padding,
              use_bias=spec.bias if use_bias is None else use_bias, **common)


class UpConv(nn.Module):
  """2x upsampling: a 2x2 stride-2 transposed convolution.

  Computed as a 1x1 convolution to ``4*features`` channels followed by a pixel
  shuffle, which is the same map. The kernel is stored as ``(1, 1, c_in,
  4*features)`` with output channel ``o*4 + i*2 + j`` for sub-pixel ``(i, j)``
  (the authors' NE layout). In ``norm_equiv`` mode each of the ``4*features``
  1x1 filters sums to 1, and there is no bias; in ``ordinary`` mode the bias
  is one value per output channel, as in a transposed convolution.
  """

  features: int
  spec: ModeSpec
  parametrization: ops.Parametrization = "centre"
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = conv(self.spec, 4 * self.features, (1, 1), padding="valid", use_bias=False,
             parametrization=self.parametrization, dtype=self.dtype,
             param_dtype=self.param_dtype, name="conv")(x)
    y = ops.pixel_shuffle(y, 2)
    if self.spec.bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
      y = ops.bias_add(y, bias)
    return y


class ResBlock(nn.Module):
  """conv -> activation -> conv, merged with the input by the mode's residual."""

  features: int
  spec: ModeSpec
  use_bias: Optional[bool] = None
  parametrization: ops.Parametrization = "centre"
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(use_bias=self.use_bias, parametrization=self.parametrization, dtype=self.dtype,
              param_dtype=self.param_dtype)
    y = conv(self.spec, self.features, name="conv1", **kw)(x)
    if not self.spec.sort_pool:  # SortPool is applied by conv2, with its padding
      y = activation(self.spec, y)
    conv2 = conv(self.spec, self.features, name="conv2", **kw)
    # The second convolution is the branch's last linear map: an affine
    # residual folds its (1 - alpha) into that kernel (see AffineResidual).
    return Residual(self.spec, self.param_dtype, name="residual")(
        x, branch=lambda scale: conv2(y, scale, sort_input=self.spec.sort_pool))


class ScaleBatchNorm(nn.Module):
  """Bias-free batch normalization (Mohan et al. 2020): ``gamma * x / sd``.

  No mean subtraction and no beta: with running statistics (inference) it is
  a per-channel linear map, hence scale-equivariant. In training the batch
  standard deviation is used and the running variance updated.
  """

  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
    c = x.shape[-1]
    var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    gamma = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    if use_running_average:
      v = var.value
    else:
      xf = x.astype(jnp.float32)
      v = jnp.var(xf, axis=tuple(range(x.ndim - 1)))
      if not self.is_initializing():
        var.value = self.momentum * var.value + (1 - self.momentum) * v
    dtype = _compute_dtype(x, self.dtype)
    mult = (gamma.astype(jnp.float32) * jax.lax.rsqrt(v + self.epsilon)).astype(dtype)
    return x.astype(dtype) * mult


def check_even(features: Sequence[int] | int, what: str) -> None:
  feats = [features] if isinstance(features, int) else list(features)
  if any(f % 2 for f in feats):
    raise ValueError(f"{what}: norm_equiv uses SortPool, which needs even feature counts; got {features}")
