"""A reflect-padded 3x3 convolution with SortPool fused into its input loads (Pallas, for GPUs).

On a GPU the reference NE layer (:func:`nedenoise_jax.ops.sort_pool_conv2d` with
reflect padding) is two passes over the activations: one XLA fusion that sorts
the channel pairs and writes a reflect-padded copy, then cuDNN's convolution of
that copy. An ordinary layer is one pass: cuDNN pads with zeros itself and
applies the ReLU in its epilogue. This kernel is the NE layer in one pass: each
program computes a block of output pixels x output channels as 9 tap products
(implicit GEMM), reading its input rows at reflected addresses and sorting the
channel pairs as they are loaded, so neither the sorted nor the padded copy is
ever written.

Values are those of the reference up to float rounding (the products are
summed in another order). In training, the kernel's gradient is a second Pallas
kernel that gathers the sorted, reflected input the same way (:func:`_wgrad`);
the input's gradient is XLA's (``jax.vjp`` of the reference), which needs no
padded copy. The same programs run on the CPU in Pallas' interpreter
(``interpret=True``), which is how the tests check them.

Supported: stride 1, padding ((1, 1), (1, 1)), a 3x3 kernel, H and W >= 2, input
channels a power of two, at least 16 (channel pairs: 16 with ``sort_input``), output
channels a power of two or at most 16 -- the shapes of FDnCNN's and DRUNet's inner
layers and of their last ones (64 -> 1 or 3 channels). :func:`supports` says whether a
call qualifies.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from nedenoise_jax import ops

PADDING = ((1, 1), (1, 1))
LANES = 16  # the smallest side of a block Triton's matrix product takes
ENV = "NEDENOISE_GPU_CONV"
MODES = ("xla", "pallas", "pallas_fwd", "interpret")


def mode() -> str:
  """The path ``NEDENOISE_GPU_CONV`` asks for, read when a program is traced.

  * ``xla`` (default): XLA's fusions and cuDNN's convolutions (the reference operations);
  * ``pallas``: this kernel on CUDA GPUs, where :func:`supports` the shapes, and its
    kernel-gradient kernel in training (:func:`_wgrad`);
  * ``pallas_fwd``: this kernel, with XLA's kernel gradient (to measure the two apart);
  * ``interpret``: both kernels in Pallas' interpreter on every platform (tests; slow).

  ``xla`` stays the default until the GPU benchmark shows the kernel faster
  (docs/performance.md#gpu).
  """
  value = os.environ.get(ENV, "xla").strip().lower() or "xla"
  if value not in MODES:
    raise ValueError(f"{ENV}={value!r}; expected one of {MODES}")
  return value


def _pow2(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def supports(z_shape, k_shape, dtype, k_dtype, strides, padding, sort_input: bool) -> bool:
  """Whether :func:`sort_pool_conv3x3` computes this convolution."""
  if len(z_shape) != 4 or len(k_shape) != 4 or tuple(k_shape[:2]) != (3, 3) or strides != 1:
    return False
  if isinstance(padding, str) or ops.explicit_padding(padding) != PADDING:
    return False
  if jnp.dtype(dtype) not in (jnp.float32, jnp.bfloat16) or jnp.dtype(k_dtype) != jnp.dtype(dtype):
    return False
  _, h, w, ci = z_shape
  co = k_shape[3]
  return (h >= 2 and w >= 2 and k_shape[2] == ci and _pow2(ci) and (co <= LANES or _pow2(co))
          and (ci // 2 if sort_input else ci) >= LANES)


def _dot_algorithm(dtype, interpret: bool):
  """The kernels' products: at XLA's default precision and at "high", TF32 on a GPU, as XLA's
  convolutions. At "highest" (``float32``) three TF32 products (``TF32_TF32_F32_X3``): float32's
  accuracy on the tensor cores, where Triton's IEEE float32 product runs on the FMA units and
  spills 0.8-25 KB of registers per thread (benchmarks/triton_report.py --precision highest).
  ``None`` (the precision in effect) in the interpreter and for bfloat16."""
  if interpret or jnp.dtype(dtype) != jnp.float32:
    return None
  if jax.config.jax_default_matmul_precision in ("highest", "float32"):
    return jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3
  return None


def _reflect(i, n):
  """The source index of position ``i`` (-1 .. n) of an axis reflect-padded by 1."""
  return jnp.where(i < 0, -i, jnp.where(i >= n, 2 * (n - 1) - i, i))


def _kernel(z_ref, k_ref, o_ref, *, h, w, co, bm, bn, bk, nk, sort, interpret, algorithm):
  """One block of ``bm`` output pixels of image ``program_id(0)`` x ``bn`` output channels.

  ``z_ref``: ``(N * H * W, Ci)``; ``k_ref``: ``(9, Ci, Co')`` (with ``sort``: rows 0 .. Ci/2 - 1
  the taps of the pairs' minima, then of their maxima; ``Co' = max(Co, 16)``, the columns
  past ``Co`` copies of the last); ``o_ref``: ``(N * H * W, Co)``.
  """
  n, m, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  p = m * bm + jnp.arange(bm, dtype=jnp.int32)
  valid = p < h * w
  # Rows past the image compute its last pixel again: masked out of the store on a GPU; the
  # interpreter (which writes masked lanes back with the values they held) stores them, the same
  # values to the same place.
  p = jnp.minimum(p, h * w - 1)
  y, x = p // w, p % w
  cols = pl.ds(j * bn, bn)
  half = nk * bk  # with sort: the number of channel pairs
  lanes = jnp.arange(bk, dtype=jnp.int32)[None, :]

  def dot(a, b, acc):  # at _dot_algorithm's precision
    return acc + jnp.dot(a, b, precision=algorithm, preferred_element_type=jnp.float32)

  # Every load and store indexes with integer arrays only (gathers): Triton takes them as
  # pointer arithmetic, and Pallas' interpreter supports them (not mixed with strided slices).
  acc = jnp.zeros((bm, bn), jnp.float32)
  for dy in range(3):
    yy = _reflect(y + (dy - 1), h)
    for dx in range(3):
      rows = (n * (h * w) + yy * w + _reflect(x + (dx - 1), w))[:, None]
      tap = dy * 3 + dx

      def body(c, acc, rows=rows, tap=tap):
        if sort:
          a = z_ref[rows, 2 * (c * bk + lanes)]
          b = z_ref[rows, 2 * (c * bk + lanes) + 1]
          acc = dot(jnp.minimum(a, b), k_ref[tap, pl.ds(c * bk, bk), cols], acc)
          return dot(jnp.maximum(a, b), k_ref[tap, pl.ds(half + c * bk, bk), cols], acc)
        return dot(z_ref[rows, c * bk + lanes], k_ref[tap, pl.ds(c * bk, bk), cols], acc)

      acc = jax.lax.fori_loop(0, nk, body, acc) if nk > 1 else body(0, acc)
  out_rows = (n * (h * w) + p)[:, None]
  # Under 16 output channels (a model's last layer), the kernel's copies of its last column give
  # that channel's values again: masked on a GPU, stored to it again by the interpreter.
  out_cols = j * bn + jnp.arange(bn, dtype=jnp.int32)
  mask = None if interpret else valid[:, None] & (out_cols < co)[None, :]
  plgpu.store(o_ref.at[out_rows, jnp.minimum(out_cols, co - 1)[None, :]], acc.astype(o_ref.dtype), mask=mask)


def _launch(hw: int, ci_eff: int, co: int, *, sort: bool, dtype, algorithm,
            forward: bool = True) -> tuple[int, int, int, int]:
  """Blocks ``(bm, bn, bk)`` (pixels, output channels, input channels or pairs) and warps per
  program: the largest blocks for which ptxas spills no register on Hopper (sm_90) at the shapes
  of FDnCNN's and DRUNet's layers (benchmarks/triton_report.py, at both precisions).

  The forward kernel loops over ``ci_eff / bk`` channel blocks: looping over those of a sorted
  float32 input takes 8 warps (with 4, a thread's registers do not hold both of a pair's operand
  blocks, their minima and maxima and the pipelined next ones; DRUNet's 256- and 512-channel
  levels spilled 768-1016 bytes); the kernel gradient (``forward=False``; it takes ``bn`` and
  ``bk``, its ``bm`` is its own) has one program per channel block and 4. Three TF32 products
  (``algorithm``, at "highest") split each operand in two: 8 warps, and blocks of 16 pairs or 32
  channels, in both kernels.
  """
  bn = min(max(co, LANES), 64)
  bm = 64 if hw >= 64 else 16
  if algorithm is not None:
    return bm, bn, min(ci_eff, 16 if sort else 32), 8
  bk = min(ci_eff, 64)
  loops = ci_eff > bk
  return bm, bn, bk, 8 if forward and sort and loops and jnp.dtype(dtype) == jnp.float32 else 4


@functools.partial(jax.jit, static_argnames=("sort_input", "interpret"))
def _forward(z, k, *, sort_input: bool, interpret: bool):
  n, h, w, ci = z.shape
  co = k.shape[3]
  taps = k.reshape(9, ci, co)
  if sort_input:  # the kernel rows of the pairs' minima (even channels), then of their maxima
    taps = jnp.concatenate([taps[:, 0::2], taps[:, 1::2]], axis=1)
  if co < LANES:  # a block of 16 columns: copies of the last
    taps = jnp.pad(taps, ((0, 0), (0, 0), (0, LANES - co)), mode="edge")
  ci_eff = ci // 2 if sort_input else ci
  algorithm = _dot_algorithm(z.dtype, interpret)
  bm, bn, bk, warps = _launch(h * w, ci_eff, co, sort=sort_input, dtype=z.dtype, algorithm=algorithm)
  kernel = functools.partial(_kernel, h=h, w=w, co=co, bm=bm, bn=bn, bk=bk, nk=ci_eff // bk,
                             sort=sort_input, interpret=interpret, algorithm=algorithm)
  out = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((n * h * w, co), z.dtype),
      grid=(n, pl.cdiv(h * w, bm), taps.shape[2] // bn), interpret=interpret,
      # Triton's parameters also select the Triton backend (JAX's default for GPUs may be
      # Mosaic GPU, which does not take gathers); 2 stages bound the shared memory of wide layers.
      compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=2),
      name="nedenoise_sort_pool_conv3x3" if sort_input else "nedenoise_reflect_conv3x3",
  )(z.reshape(n * h * w, ci), taps.astype(z.dtype))
  return out.reshape(n, h, w, co)


def _wgrad_kernel(z_ref, g_ref, o_ref, *, h, w, co, total, bm, bn, bk, half, per, sort, algorithm):
  """Partial sums of the kernel gradient over one share of the pixels.

  Program ``(tap, c, j, s)``: rows ``c * bk ..`` of tap ``tap`` (with ``sort``: those of the
  pairs' minima and, ``half`` rows further, of their maxima) x output channels ``j * bn ..``,
  summed over pixel blocks ``s * per .. s * per + per - 1`` of ``bm`` pixels of the whole batch.
  ``z_ref``: ``(N * H * W, Ci)``; ``g_ref``: ``(N * H * W, Co)``, the output's cotangent;
  ``o_ref``: ``(S * 9 * R, max(Co, 16))`` in float32, ``R`` the kernel rows of a tap (the
  columns past ``Co`` zero).
  """
  tap, c, j, s = pl.program_id(0), pl.program_id(1), pl.program_id(2), pl.program_id(3)
  dy, dx = tap // 3 - 1, tap % 3 - 1
  hw = h * w
  lanes = c * bk + jnp.arange(bk, dtype=jnp.int32)[None, :]
  cols = (j * bn + jnp.arange(bn, dtype=jnp.int32))[None, :]
  g_cols = jnp.minimum(cols, co - 1)  # under 16 channels: the columns past them read as zeros

  def tdot(a, b, acc):  # a^T b: the pixels are the contracted axis; at _dot_algorithm's precision
    return acc + jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=algorithm,
                                     preferred_element_type=jnp.float32)

  def body(t, accs):
    p = (s * per + t) * bm + jnp.arange(bm, dtype=jnp.int32)
    valid = p < total
    p = jnp.minimum(p, total - 1)  # rows past the batch read its last pixel, with a zero cotangent
    img, q = p // hw, p % hw
    rows = (img * hw + _reflect(q // w + dy, h) * w + _reflect(q % w + dx, w))[:, None]
    g = jnp.where(valid[:, None] & (cols < co), g_ref[p[:, None], g_cols], 0).astype(g_ref.dtype)
    if sort:
      a, b = z_ref[rows, 2 * lanes], z_ref[rows, 2 * lanes + 1]
      return tdot(jnp.minimum(a, b), g, accs[0]), tdot(jnp.maximum(a, b), g, accs[1])
    return (tdot(z_ref[rows, lanes], g, accs[0]),)

  zero = jnp.zeros((bk, bn), jnp.float32)
  accs = (zero, zero) if sort else (zero,)
  accs = jax.lax.fori_loop(0, per, body, accs) if per > 1 else body(0, accs)
  rows_per_tap = 2 * half if sort else half
  base = (s * 9 + tap) * rows_per_tap + c * bk + jnp.arange(bk, dtype=jnp.int32)
  for i, acc in enumerate(accs):  # i = 1: the maxima's rows, ``half`` further
    plgpu.store(o_ref.at[(base + i * half)[:, None], cols], acc)


def _wgrad_splits(total: int, bm: int, programs: int) -> int:
  """How many shares the pixels are summed in: enough programs to fill a large GPU (about 1024),
  at most one per pixel block."""
  return max(1, min(pl.cdiv(total, bm), pl.cdiv(1024, programs)))


@functools.partial(jax.jit, static_argnames=("k_shape", "sort_input", "interpret", "splits"))
def _wgrad(z, g, *, k_shape, sort_input: bool, interpret: bool, splits: int | None = None):
  """The gradient of :func:`_forward` with respect to the kernel, ``(3, 3, Ci, Co)`` in ``g``'s
  dtype: each tap's rows are the sorted, reflected input's pixels against the cotangent's,
  gathered as loaded (nothing padded or sorted is written), summed in float32 in ``splits``
  shares (default :func:`_wgrad_splits`) and the shares added by XLA."""
  n, h, w, ci = z.shape
  co = k_shape[3]
  total = n * h * w
  half = ci // 2 if sort_input else ci  # kernel rows per tap of each accumulator
  algorithm = _dot_algorithm(z.dtype, interpret)
  _, bn, bk, warps = _launch(total, half, co, sort=sort_input, dtype=z.dtype, algorithm=algorithm,
                             forward=False)
  bm, cop = 64, max(co, LANES)
  grid = (9, half // bk, cop // bn)
  splits = splits or _wgrad_splits(total, bm, grid[0] * grid[1] * grid[2])
  per = pl.cdiv(pl.cdiv(total, bm), splits)
  kernel = functools.partial(_wgrad_kernel, h=h, w=w, co=co, total=total, bm=bm, bn=bn, bk=bk, half=half,
                             per=per, sort=sort_input, algorithm=algorithm)
  parts = pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((splits * 9 * ci, cop), jnp.float32),
      grid=(*grid, splits), interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=2),
      name="nedenoise_sort_pool_conv3x3_wgrad" if sort_input else "nedenoise_reflect_conv3x3_wgrad",
  )(z.reshape(total, ci), g.reshape(total, co))
  taps = parts.reshape(splits, 9, ci, cop)[..., :co].sum(0)
  if sort_input:  # back from the minima's rows, then the maxima's, to the pairs' channels
    taps = jnp.stack([taps[:, :half], taps[:, half:]], axis=2)
  return taps.reshape(k_shape).astype(g.dtype)


def _reference(z, k, sort_input):
  if sort_input:
    return ops.sort_pool_conv2d(z, k, 1, PADDING, pad_mode="reflect")
  return ops.conv2d(z, k, 1, PADDING, pad_mode="reflect")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def sort_pool_conv3x3(z: jax.Array, k: jax.Array, sort_input: bool = True, interpret: bool = False,
                      wgrad: bool = True) -> jax.Array:
  """``conv2d(sort_pool(z) if sort_input else z, k, padding=((1, 1), (1, 1)), pad_mode="reflect")``.

  ``z``: ``(N, H, W, Ci)``; ``k``: ``(3, 3, Ci, Co)`` (HWIO); shapes as :func:`supports`
  accepts. ``interpret``: run in Pallas' interpreter (any platform; slow). The gradient:
  the input's is XLA's (cuDNN's transposed convolution of the cotangent, then one fusion that
  folds the reflected border back and routes each pair's gradient to its minimum or maximum);
  the kernel's is :func:`_wgrad`'s kernel with ``wgrad``, XLA's otherwise (which writes the
  sorted, padded input again for cuDNN).
  """
  return _forward(z, k, sort_input=sort_input, interpret=interpret)


def _fwd(z, k, sort_input, interpret, wgrad):
  return _forward(z, k, sort_input=sort_input, interpret=interpret), (z, k)


def _bwd(sort_input, interpret, wgrad, res, g):
  z, k = res
  if not wgrad:
    return jax.vjp(lambda z, k: _reference(z, k, sort_input), z, k)[1](g)
  dz = jax.vjp(lambda z: _reference(z, k, sort_input), z)[1](g)[0]
  return dz, _wgrad(z, g, k_shape=k.shape, sort_input=sort_input, interpret=interpret)


sort_pool_conv3x3.defvjp(_fwd, _bwd)
