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
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

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
    others = jnp.sum(con, axis=(0, 1, 2)) - con[ah, aw, 0, :]
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


def kernel_sums(kernel: jax.Array, *, free_channels: int = 0) -> jax.Array:
  """Sum of each output filter over the constrained input channels and taps, ``(c_out,)``."""
  cin = kernel.shape[2]
  return jnp.sum(kernel[:, :, : cin - free_channels, :], axis=(0, 1, 2))


def sort_pool(x: jax.Array) -> jax.Array:
  """Sorts adjacent channel pairs ``(2k, 2k+1)`` into ``(min, max)``.

  The NE replacement of ReLU. ``x``: ``(..., C)`` with ``C`` even; same shape out.
  """
  c = x.shape[-1]
  if c % 2:
    raise ValueError(f"sort_pool needs an even number of channels (last axis), got shape {x.shape}")
  # Elementwise min/max of the even and odd channels: XLA fuses this into one
  # pass, where a min/max reduction over a trailing axis of 2 is two slow passes.
  a, b = x[..., 0::2], x[..., 1::2]
  return jnp.stack([jnp.minimum(a, b), jnp.maximum(a, b)], axis=-1).reshape(x.shape)


def affine_combination(x: jax.Array, y: jax.Array, alpha: jax.Array | float) -> jax.Array:
  """``alpha*x + (1-alpha)*y``, the NE form of a residual sum ``x + y``.

  Computed as ``y + alpha*(x - y)`` so that a common shift of ``x`` and ``y``
  cancels exactly in the difference (float rounding does not depend on it).
  """
  return y + alpha * (x - y)


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


def reflect_pad(x: jax.Array, pad: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Reflect-pads the spatial axes of an NHWC array (edge pixel not repeated).

  Works for every size: a 1-pixel axis is repeated, and pads wider than the
  axis reflect back and forth. Every padded value is a copy of an input pixel,
  which keeps the padding NE.
  """
  (t, b), (l, r) = pad
  return jnp.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), mode="reflect")


_DN = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jax.Array, kernel: jax.Array, strides: int = 1, padding="VALID") -> jax.Array:
  """NHWC x HWIO convolution; ``padding``: ``"VALID"`` or ``((t, b), (l, r))`` zeros.

  XLA:CPU runs an unpadded (``VALID``) 3x3 convolution about 3x slower than a
  zero-padded one of the same size (measured on this project's 2-core AVX2
  machine, JAX 0.10). On the CPU, a stride-1 ``VALID`` convolution is therefore
  computed as a ``SAME`` one whose border is cropped: the same numbers, a few
  border pixels of extra work. Other platforms use the direct form.
  """
  kh, kw = kernel.shape[:2]
  direct = lambda: jax.lax.conv_general_dilated(  # noqa: E731
      x, kernel, (strides, strides), padding, dimension_numbers=_DN)
  if padding != "VALID" or strides != 1 or (kh == 1 and kw == 1):
    return direct()
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  if h < 1 or w < 1:
    return direct()  # let XLA report the shape error

  def cropped():
    (t, _), (l, _) = same_padding((kh, kw))
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), same_padding((kh, kw)), dimension_numbers=_DN)
    return y[:, t:t + h, l:l + w, :]

  return jax.lax.platform_dependent(cpu=cropped, default=direct)


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

