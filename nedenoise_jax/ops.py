"""Pure, jit-able array operations behind the normalization-equivariant layers.

Nothing here depends on Flax. Images are NHWC; convolution kernels are HWIO,
``(kh, kw, c_in, c_out)``, the layout of :func:`jax.lax.conv_general_dilated`
with ``("NHWC", "HWIO", "NHWC")``.

Why these operations make a network normalization-equivariant (NE), i.e.
``f(a*x + b) = a*f(x) + b`` for ``a > 0`` and real ``b``:

* a bias-free convolution whose kernel sums to 1 over its input channels and
  taps maps ``a*x + b`` to ``a*(k*x) + b`` (:func:`affine_kernel`);
* sorting adjacent channel pairs commutes with ``x -> a*x + b`` for ``a > 0``
  (:func:`sort_pool`);
* ``alpha*x + (1-alpha)*y`` commutes with it too (:func:`affine_combination`);
* reflect padding and pixel (un)shuffling only move pixels around.

These are the reference: the layers (:mod:`nedenoise_jax.nn.layers`) call the
same operations through :mod:`nedenoise_jax.kernels`, which runs a fused
backend version where one exists (oneDNN on the CPU) and these otherwise.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Parametrization = Literal["centre", "roll"]
PARAMETRIZATIONS = ("centre", "roll")


def anchor_tap(kernel_size: tuple[int, int]) -> tuple[int, int]:
  """The spatial tap whose value the ``centre`` parametrization derives.

  For odd sizes it is the centre. For even sizes there is no centre and we use
  ``((kh - 1) // 2, (kw - 1) // 2)``, the tap that XLA's ``SAME`` padding aligns
  with the output pixel (top-left of the central 2x2 block; ``(0, 0)`` for a
  2x2 kernel). The derived entry is on input channel 0.
  """
  kh, kw = kernel_size
  return (kh - 1) // 2, (kw - 1) // 2


def affine_kernel(
    theta: jax.Array,
    *,
    free_channels: int = 0,
    total: float = 1.0,
    parametrization: Parametrization = "centre",
) -> jax.Array:
  """Maps free parameters to a kernel whose filters each sum to ``total``.

  Args:
    theta: ``(kh, kw, c_in, c_out)`` free parameters.
    free_channels: the last ``free_channels`` input channels are left
      unconstrained and excluded from the sum (the noise-level map of a
      non-blind denoiser: it is scaled with the image but never shifted).
    total: the value each output filter sums to over the constrained input
      channels and all taps: 1 for an affine (NE) convolution, 0 for a
      shift-invariant one (DnCNN's noise predictor).
    parametrization: ``"centre"`` (the paper's poster): the tap
      :func:`anchor_tap` of input channel 0 is ``total - sum(other taps)``;
      its stored value is ignored (it receives no gradient).
      ``"roll"`` (the authors' public code): with ``t`` the constrained
      parameters of one output filter flattened in ``(c_in, kh, kw)`` order,
      ``k = roll(t, 1) - t + total / n``. Both reach every kernel that sums to
      ``total``; they differ in training dynamics.

  Returns:
    The kernel, same shape and dtype as ``theta``. Each filter's constrained
    part sums to ``total`` up to floating point rounding.
  """
  if theta.ndim != 4:
    raise ValueError(f"affine_kernel expects an HWIO kernel of rank 4, got shape {theta.shape}")
  kh, kw, cin, cout = theta.shape
  n_con = cin - free_channels
  if not 0 <= free_channels < cin:
    raise ValueError(
        f"free_channels must be in [0, {cin - 1}] for a kernel with {cin} input "
        f"channels, got {free_channels}")
  con, free = theta[:, :, :n_con, :], theta[:, :, n_con:, :]
  if parametrization == "centre":
    ah, aw = anchor_tap((kh, kw))
    others = channel_sums(con) - con[ah, aw, 0, :]  # each filter's sum
    con = con.at[ah, aw, 0, :].set(total - others)
  elif parametrization == "roll":
    n = kh * kw * n_con
    flat = jnp.transpose(con, (3, 2, 0, 1)).reshape(cout, n)
    flat = jnp.roll(flat, 1, axis=1) - flat + jnp.asarray(total / n, theta.dtype)
    con = jnp.transpose(flat.reshape(cout, n_con, kh, kw), (2, 3, 1, 0))
  else:
    raise ValueError(
        f"unknown parametrization {parametrization!r}; expected one of {PARAMETRIZATIONS}")
  if free_channels:
    return jnp.concatenate([con, free], axis=2)
  return con


def _accumulator(dtype) -> jnp.dtype:
  return jnp.promote_types(dtype, jnp.float32)


def channel_sums(x: jax.Array) -> jax.Array:
  """Sum over every axis but the last, ``(C,)``, accumulated in at least float32.

  A product with a vector of ones: XLA:CPU runs the equivalent reduction 3x
  to 7x slower (1.6 ms against 0.6 ms for a 4x128x128x64 gradient; 3.5 ms
  against 0.5 ms for a 3x3x512x512 kernel), and networks take one per
  convolution per step (bias gradients, kernel constraints). ``HIGHEST`` keeps
  float32 sums exact to float32 rounding where a backend would use TF32.
  Returned in ``x``'s dtype.
  """
  flat = x.reshape(-1, x.shape[-1])
  ones = jnp.ones((flat.shape[0],), flat.dtype)
  out = jnp.dot(ones, flat, precision=jax.lax.Precision.HIGHEST,
                preferred_element_type=_accumulator(x.dtype))
  return out.astype(x.dtype)


def inner(a: jax.Array, b: jax.Array) -> jax.Array:
  """``sum(a * b)`` over every element, as one dot product, in at least float32.

  XLA:CPU runs ``jnp.sum(a * b)`` about 2x slower than the dot (2.9 ms
  against 1.4 ms for two 4x128x128x64 arrays): a reduction to a scalar must
  keep its additions in order. The gradient norm of a training step sums one
  per parameter array (DRUNet: 32M parameters).
  """
  acc = _accumulator(jnp.result_type(a, b))
  return jnp.dot(a.reshape(-1).astype(acc), b.reshape(-1).astype(acc),
                 precision=jax.lax.Precision.HIGHEST)


def kernel_sums(kernel: jax.Array, *, free_channels: int = 0) -> jax.Array:
  """Sum of each output filter over the constrained input channels and taps, ``(c_out,)``."""
  cin = kernel.shape[2]
  return jnp.sum(kernel[:, :, : cin - free_channels, :], axis=(0, 1, 2))


def sort_pool(x: jax.Array) -> jax.Array:
  """Sorts adjacent channel pairs ``(2k, 2k+1)`` into ``(min, max)``: the NE replacement of ReLU.

  ``x``: ``(..., C)`` with ``C`` even; same shape out. Sorting is a
  permutation of each pair, and so is the gradient: each output's gradient
  goes back to the input it came from (on a tie, the minimum's to the first).
  """
  c = x.shape[-1]
  if c % 2:
    raise ValueError(f"sort_pool needs an even number of channels (last axis), got shape {x.shape}")
  return _sort_pairs(x)


def _swap_where(first_is_min, a, b):
  return jnp.where(first_is_min, a, b), jnp.where(first_is_min, b, a)


@jax.custom_vjp
def _sort_pairs(x: jax.Array) -> jax.Array:
  a, b = x[..., 0::2], x[..., 1::2]
  return jnp.stack([jnp.minimum(a, b), jnp.maximum(a, b)], axis=-1).reshape(x.shape)


def _sort_pairs_fwd(x):
  return _sort_pairs(x), x[..., 0::2] <= x[..., 1::2]


def _sort_pairs_bwd(first_is_min, g):
  lo, hi = _swap_where(first_is_min, g[..., 0::2], g[..., 1::2])
  return (jnp.stack([lo, hi], axis=-1).reshape(g.shape),)


_sort_pairs.defvjp(_sort_pairs_fwd, _sort_pairs_bwd)


def affine_combination(x: jax.Array, y: jax.Array, alpha: jax.Array | float) -> jax.Array:
  """``alpha*x + (1-alpha)*y``, the NE form of a residual sum ``x + y``.

  Computed as ``y + alpha*(x - y)`` so that a common shift of ``x`` and ``y``
  cancels exactly in the difference (float rounding does not depend on it).
  For ``x``, ``y`` of one shape and a scalar ``alpha`` it is differentiated by
  hand (:func:`combination_grad`).
  """
  if jnp.shape(alpha) == () and jnp.shape(x) == jnp.shape(y) and jnp.ndim(x) >= 1 and jnp.size(x):
    return _affine_combination(x, y, jnp.asarray(alpha, jnp.result_type(x, y, alpha)))
  return y + alpha * (x - y)


def combination_grad(g, x, y, alpha):
  """The gradient of ``y + alpha*(x - y)``: ``(alpha*g, g - alpha*g, sum(g*(x - y)))``."""
  # alpha's gradient sums g*(x - y) over every element. As one reduction to a
  # scalar, XLA:CPU runs it as a serial chain of additions (strict float
  # semantics forbid reassociating them); summed over all but the channel axis
  # first, it runs as one vector of independent sums per channel. NE DRUNet's
  # training step: 3.20 -> 3.03 s on a 2-core AVX-512 CPU (ordinary 2.83 s).
  # As one dot product (`inner`) it is no faster: the dot needs g and x - y
  # written out first, where the reduction fuses them.
  acc = _accumulator(x.dtype)
  prod = (g * (x - y)).astype(acc).reshape(-1, x.shape[-1])
  g_alpha = jnp.sum(jnp.sum(prod, axis=0)).astype(alpha.dtype)
  gx = alpha * g
  return gx, g - gx, g_alpha


def affine_combination_with_grad(grad):
  """``(x, y, alpha) -> y + alpha*(x - y)`` whose backward pass is ``grad(g, x, y, alpha)``.

  ``grad`` computes :func:`combination_grad`'s values (a backend's one-pass
  version, :mod:`nedenoise_jax.kernels`); the results are cast to the inputs'
  dtypes. Arguments as in the private path of :func:`affine_combination`.
  """

  @jax.custom_vjp
  def combine(x, y, alpha):
    return y + alpha * (x - y)

  def fwd(x, y, alpha):
    return combine(x, y, alpha), (x, y, alpha)

  def bwd(res, g):
    x, y, alpha = res
    gx, gy, g_alpha = grad(g, x, y, alpha)
    return gx.astype(x.dtype), gy.astype(y.dtype), g_alpha.astype(alpha.dtype)

  combine.defvjp(fwd, bwd)
  return combine


_affine_combination = affine_combination_with_grad(combination_grad)


def scale_add(x: jax.Array, y: jax.Array, alpha: jax.Array) -> jax.Array:
  """``alpha*x + y`` for ``x``, ``y`` of one shape and a scalar ``alpha``.

  With ``y = (1-alpha)*z`` it is :func:`affine_combination` of ``x`` and
  ``z``; networks use it when ``(1-alpha)`` is folded into the kernel of the
  convolution that makes ``z`` (``nn.layers.AffineResidual``), so the backward
  pass hands the incoming gradient to that convolution unscaled. Its own
  gradient is ``(alpha*g, g, sum(g*x))`` (:func:`scale_grad`).
  """
  check_scale_add(x, y, alpha)
  return _scale_add(x, y, jnp.asarray(alpha, jnp.result_type(x, y, alpha)))


def check_scale_add(x, y, alpha) -> None:
  if jnp.shape(alpha) != () or jnp.shape(x) != jnp.shape(y) or jnp.ndim(x) < 1:
    raise ValueError(f"scale_add needs x and y of one shape and a scalar alpha, got {jnp.shape(x)}, "
                     f"{jnp.shape(y)} and {jnp.shape(alpha)}")


def scale_grad(g, x, alpha):
  """``(alpha*g, sum(g*x))``: the gradient of ``alpha*x + y`` for ``x`` and ``alpha``."""
  # g and x are both written out already, so one dot product reads them
  # once, on every core, with nothing materialized in between.
  return alpha * g, inner(g, x)


def scale_add_with_grad(grad):
  """``(x, y, alpha) -> alpha*x + y`` whose backward pass takes ``(alpha*g, sum(g*x))`` from ``grad(g, x, alpha)``."""

  @jax.custom_vjp
  def add(x, y, alpha):
    return alpha * x + y

  def fwd(x, y, alpha):
    return add(x, y, alpha), (x, alpha)

  def bwd(res, g):
    x, alpha = res
    gx, g_alpha = grad(g, x, alpha)
    return gx.astype(x.dtype), g, g_alpha.astype(alpha.dtype)

  add.defvjp(fwd, bwd)
  return add


_scale_add = scale_add_with_grad(scale_grad)


def bias_add(y: jax.Array, bias: jax.Array) -> jax.Array:
  """``y + bias`` (cast to ``y``'s dtype) for a bias over the last axis.

  The bias gradient is :func:`channel_sums` of the output gradient. Autodiff
  would reduce over N, H and W with XLA's reduction instead: 170 ms of a 2.7 s
  ordinary DRUNet training step on a 2-core AVX-512 CPU.
  """
  if bias.ndim != 1 or y.shape[-1:] != bias.shape:
    raise ValueError(f"bias_add needs a bias of shape ({y.shape[-1]},) for y of shape {y.shape}, "
                     f"got {bias.shape}")
  return _bias_add(y, bias.astype(y.dtype))


@jax.custom_vjp
def _bias_add(y: jax.Array, bias: jax.Array) -> jax.Array:
  return y + bias


def _bias_add_fwd(y, bias):
  return _bias_add(y, bias), None


def _bias_add_bwd(_, g):
  return g, channel_sums(g)


_bias_add.defvjp(_bias_add_fwd, _bias_add_bwd)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """Depth to space: ``(N, H, W, C*f*f)`` -> ``(N, H*f, W*f, C)``.

  Channel ``c*f*f + i*f + j`` goes to sub-pixel ``(i, j)`` of channel ``c``
  (PyTorch's ``pixel_shuffle`` order).
  """
  n, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f"pixel_shuffle by {factor} needs channels divisible by {factor * factor}, got shape {x.shape}")
  co = c // (factor * factor)
  x = x.reshape(n, h, w, co, factor, factor)
  x = jnp.transpose(x, (0, 1, 4, 2, 5, 3))
  return x.reshape(n, h * factor, w * factor, co)


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
  """Space to depth, the inverse of :func:`pixel_shuffle`."""
  n, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"pixel_unshuffle by {factor} needs H and W divisible by {factor}, got shape {x.shape}")
  x = x.reshape(n, h // factor, factor, w // factor, factor, c)
  x = jnp.transpose(x, (0, 1, 3, 5, 2, 4))
  return x.reshape(n, h // factor, w // factor, c * factor * factor)


def reflect_indices(n: int, before: int, after: int) -> np.ndarray:
  """Source index of each position of an axis of size ``n`` reflect-padded by ``(before, after)``.

  Edge pixels are not repeated; pads wider than the axis reflect back and
  forth; a 1-pixel axis is repeated.
  """
  i = np.arange(-before, n + after)
  if n == 1:
    return np.zeros_like(i)
  period = 2 * (n - 1)
  m = np.mod(i, period)
  return np.where(m >= n, period - m, m)


def _take(x: jax.Array, idx: np.ndarray, axis: int) -> jax.Array:
  index = [slice(None)] * x.ndim
  index[axis] = idx
  return x[tuple(index)]


def _reflect_axis_transpose(g: jax.Array, n: int, before: int, after: int, axis: int) -> jax.Array:
  """Gradient of a reflect pad along ``axis``: each pixel sums the positions copied from it.

  Written as constant-index gathers and selects, which XLA fuses into one
  pass; the gradient JAX derives for a gather is a scatter-add, several times
  slower on the CPU.
  """
  src = reflect_indices(n, before, after)
  # Position lists per source pixel, the interior copy first (every pixel has one).
  lists = [[i + before] for i in range(n)]
  for j, i in enumerate(src):
    if not before <= j < before + n:
      lists[i].append(j)
  out = _take(g, np.array([l[0] for l in lists]), axis)
  shape = [1] * g.ndim
  shape[axis] = n
  for k in range(1, max(len(l) for l in lists)):
    present = np.array([len(l) > k for l in lists])
    pos = np.array([l[k] if len(l) > k else l[0] for l in lists])
    extra = _take(g, pos, axis)
    out = out + jnp.where(present.reshape(shape), extra, jnp.zeros((), g.dtype))
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _reflect_pad(x: jax.Array, pad: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  (t, b), (l, r) = pad
  y = _take(x, reflect_indices(x.shape[1], t, b), 1)
  return _take(y, reflect_indices(x.shape[2], l, r), 2)


def _reflect_pad_fwd(x, pad):
  return _reflect_pad(x, pad), x.shape


def _reflect_pad_bwd(pad, shape, g):
  (t, b), (l, r) = pad
  g = _reflect_axis_transpose(g, shape[2], l, r, 2)
  return (_reflect_axis_transpose(g, shape[1], t, b, 1),)


_reflect_pad.defvjp(_reflect_pad_fwd, _reflect_pad_bwd)


def reflect_pad(x: jax.Array, pad: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Reflect-pads the spatial axes of an NHWC array (edge pixel not repeated).

  Works for every size: a 1-pixel axis is repeated, and pads wider than the
  axis reflect back and forth. Every padded value is a copy of an input pixel,
  which keeps the padding NE. Computed as a gather with constant indices
  (:func:`reflect_indices`), which XLA fuses with the producer of ``x`` (the
  SortPool before it) into one pass; ``jnp.pad``'s slices and concatenations
  cost about 4x more on XLA:CPU. The gradient is a fused gather too.
  """
  pad = tuple((int(a), int(b)) for a, b in pad)
  if x.ndim != 4:
    raise ValueError(f"reflect_pad expects an NHWC array, got shape {x.shape}")
  if any(v < 0 for p in pad for v in p):
    raise ValueError(f"reflect_pad needs non-negative pads, got {pad}")
  if pad == ((0, 0), (0, 0)):
    return x
  return _reflect_pad(x, pad)


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(x, kernel, (strides, strides), padding, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_zero_padded(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  return _conv(x, kernel, 1, padding)


def _conv_zero_padded_fwd(x, kernel, padding):
  return _conv(x, kernel, 1, padding), (x, kernel)


def _conv_zero_padded_bwd(padding, res, g):
  x, kernel = res
  dx = jax.vjp(lambda x: _conv(x, kernel, 1, padding), x)[1](g)[0]
  # The kernel gradient from an explicitly padded input and a VALID window:
  # XLA:CPU computes it 1.3x to 1.7x faster than with the padding inside the
  # convolution's window, most for large images in small batches (DRUNet).
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0),) + tuple((a, b, 0) for a, b in padding)
                   + ((0, 0, 0),))
  dk = jax.vjp(lambda k: _conv(xp, k, 1, "VALID"), kernel)[1](g)[0]
  return dx, dk


_conv_zero_padded.defvjp(_conv_zero_padded_fwd, _conv_zero_padded_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int = 1, padding="VALID", *,
           pad_mode: Literal["zeros", "reflect"] = "zeros") -> jax.Array:
  """NHWC x HWIO convolution; ``padding``: ``"VALID"`` or ``((t, b), (l, r))``.

  ``pad_mode``: the explicit padding is zeros, or ``"reflect"``
  (:func:`reflect_pad`, the NE padding). A zero-padded stride-1 convolution
  is differentiated by hand, the input gradient as usual, the kernel gradient
  from the explicitly padded input (see ``_conv_zero_padded_bwd``); a
  reflect-padded one is :func:`reflect_pad` then a ``VALID`` convolution. The
  values and gradients are those of :func:`jax.lax.conv_general_dilated` up
  to float rounding.
  """
  if pad_mode not in ("zeros", "reflect"):
    raise ValueError(f"unknown pad_mode {pad_mode!r}; expected 'zeros' or 'reflect'")
  if isinstance(padding, str):
    if pad_mode == "reflect" and padding != "VALID":
      raise ValueError(f"pad_mode='reflect' needs explicit padding ((t, b), (l, r)), got {padding!r}")
    return _xla_conv2d(x, kernel, strides, padding)
  explicit = explicit_padding(padding)
  if pad_mode == "reflect" and any(v for p in explicit for v in p):
    return _xla_conv2d(reflect_pad(x, explicit), kernel, strides, "VALID")
  return _xla_conv2d(x, kernel, strides, explicit)


def explicit_padding(padding) -> tuple[tuple[int, int], tuple[int, int]]:
  """``((t, b), (l, r))`` as ints; ``"VALID"`` is no padding."""
  if isinstance(padding, str):
    if padding != "VALID":
      raise ValueError(f"expected 'VALID' or ((t, b), (l, r)), got {padding!r}")
    return ((0, 0), (0, 0))
  return tuple((int(a), int(b)) for a, b in padding)  # type: ignore[return-value]


def sort_pool_conv2d(z: jax.Array, kernel: jax.Array, strides: int = 1, padding="VALID", *,
                     pad_mode: Literal["zeros", "reflect"] = "zeros") -> jax.Array:
  """``conv2d(sort_pool(z), kernel, ...)``: SortPool then a convolution."""
  return conv2d(sort_pool(z), kernel, strides, padding, pad_mode=pad_mode)


def affine_conv2d(x: jax.Array, theta: jax.Array, scale=None, strides: int = 1, padding=((1, 1), (1, 1)), *,
                  free_channels: int = 0, total: float = 1.0, sort_input: bool = False) -> jax.Array:
  """The reflect-padded convolution of ``x`` (``sort_pool(x)`` with ``sort_input``) with ``scale * affine_kernel(theta)``.

  ``k = scale * affine_kernel(theta, free_channels=free_channels, total=total)``
  in the ``centre`` parametrization, ``scale`` a scalar (``None``: 1) and
  ``padding`` explicit, ``((t, b), (l, r))``.
  """
  k = affine_kernel(theta, free_channels=free_channels, total=total)
  if scale is not None:
    k = k * jnp.asarray(scale).astype(k.dtype)
  if sort_input:
    return sort_pool_conv2d(x, k, strides, padding, pad_mode="reflect")
  return conv2d(x, k, strides, padding, pad_mode="reflect")


def _xla_conv2d(x, kernel, strides, padding):
  if isinstance(padding, str) or strides != 1 or not any(v for p in padding for v in p):
    return _conv(x, kernel, strides, padding)
  padding = tuple((int(a), int(b)) for a, b in padding)
  return _conv_zero_padded(x, kernel, padding)


def same_padding(kernel_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
  """``SAME`` padding for stride 1: ``((before, after), (before, after))``."""
  return tuple(((k - 1) // 2, k // 2) for k in kernel_size)  # type: ignore[return-value]


def pad_to_multiple(x: jax.Array, multiple: int) -> tuple[jax.Array, tuple[int, int]]:
  """Pads H and W at the bottom/right up to a multiple, with each image's own mean.

  The constant is the mean over H, W and C of that image, so the padding is
  NE and images of a batch do not influence each other. Returns the padded
  array and the original ``(H, W)`` to crop back with ``y[:, :H, :W]``.
  """
  n, h, w, c = x.shape
  ph, pw = -h % multiple, -w % multiple
  if not ph and not pw:
    return x, (h, w)
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  out = jnp.broadcast_to(mean, (n, h + ph, w + pw, c)).astype(x.dtype)
  out = jax.lax.dynamic_update_slice(out, x, (0, 0, 0, 0))
  return out, (h, w)


def sigma_map(sigma, x: jax.Array) -> jax.Array:
  """Turns a noise level into a noise-level map ``(N, H, W, 1)`` in ``x``'s dtype.

  ``sigma``: a scalar, shape ``(N,)``, ``(N, 1, 1, 1)`` or ``(N, H, W, 1)``, in
  the same units as ``x`` (``x`` is ``(N, H, W, C)``).
  """
  n, h, w, _ = x.shape
  s = jnp.asarray(sigma)
  if not (jnp.issubdtype(s.dtype, jnp.floating) or jnp.issubdtype(s.dtype, jnp.integer)):
    raise ValueError(f"sigma must be a real number or array, got dtype {s.dtype}")
  s = s.astype(x.dtype)
  if s.ndim == 0:
    return jnp.full((n, h, w, 1), s, x.dtype)
  if s.shape == (n,):
    return jnp.broadcast_to(s[:, None, None, None], (n, h, w, 1))
  if s.shape in ((n, 1, 1, 1), (n, h, w, 1)):
    return jnp.broadcast_to(s, (n, h, w, 1))
  raise ValueError(
      f"sigma has shape {s.shape}; for images of shape {x.shape} expected a scalar, "
      f"({n},), ({n}, 1, 1, 1) or ({n}, {h}, {w}, 1)")

