"""The Pallas NE convolution (kernels.pallas_conv), run in Pallas' interpreter on the CPU.

The kernel equals the reference (ops.sort_pool_conv2d / ops.conv2d with reflect padding)
in values and gradients on odd sizes; with NEDENOISE_GPU_CONV=interpret the models
route their inner layers to it (counted in the traced program) and stay exactly NE.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nedenoise_jax import equivariance, ops
from nedenoise_jax.kernels import pallas_conv
from nedenoise_jax.nn import models

PAD = ((1, 1), (1, 1))


def _reference(z, k, sort):
  return (ops.sort_pool_conv2d if sort else ops.conv2d)(z, k, 1, PAD, pad_mode="reflect")


@pytest.mark.parametrize("shape,co,sort", [
    ((2, 7, 5, 32), 16, True),     # one block with a tail, 16 pairs
    ((1, 9, 13, 64), 64, True),    # FDnCNN's inner layer
    ((1, 3, 2, 128), 128, True),   # a 3x2 image: every pixel is on the border; two output blocks
    ((2, 5, 6, 16), 32, False),    # no sort (DRUNet's first conv of a block)
    ((1, 11, 9, 256), 64, False),  # four input-channel blocks (the K loop)
    ((1, 5, 7, 256), 32, True),    # two blocks of 64 pairs (the K loop of DRUNet's 256-channel level)
    ((2, 9, 7, 64), 1, True),      # FDnCNN's last layer (gray): one output channel
    ((1, 5, 11, 32), 3, True),     # a colour model's last layer
])
def test_kernel_equals_reference_values_and_gradients(shape, co, sort):
  rng = np.random.default_rng(sum(shape) + co)
  z = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, shape[-1], co)) / shape[-1], jnp.float32)
  assert pallas_conv.supports(z.shape, k.shape, z.dtype, k.dtype, 1, PAD, sort)
  got = pallas_conv.sort_pool_conv3x3(z, k, sort, True)
  want = _reference(z, k, sort)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))
  w = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
  loss = lambda f: lambda z, k: jnp.sum(f(z, k) * w)  # noqa: E731
  gr = jax.grad(loss(lambda z, k: _reference(z, k, sort)), (0, 1))(z, k)
  for wgrad in (True, False):  # the kernel gradient by the Pallas kernel, and by XLA
    g = jax.grad(loss(functools.partial(pallas_conv.sort_pool_conv3x3, sort_input=sort, interpret=True,
                                        wgrad=wgrad)), (0, 1))(z, k)
    for a, b in zip(g, gr):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("splits", [1, 2, 4, 7])
def test_kernel_gradient_in_shares_with_a_partial_last_block(splits):
  """297 pixels: 5 blocks of 64, the last with 41; 7 shares leave two empty."""
  rng = np.random.default_rng(splits)
  z = jnp.asarray(rng.standard_normal((3, 9, 11, 32)), jnp.float32)
  for sort, co in ((True, 16), (False, 16), (True, 3)):  # 3: a colour model's last layer
    g = jnp.asarray(rng.standard_normal((3, 9, 11, co)), jnp.float32)
    k = jnp.zeros((3, 3, 32, co), jnp.float32)
    want = jax.vjp(functools.partial(_reference, z, sort=sort), k)[1](g)[0]
    got = pallas_conv._wgrad(z, g, k_shape=k.shape, sort_input=sort, interpret=True, splits=splits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_kernel_in_bfloat16_is_close_to_the_float32_reference():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.standard_normal((1, 6, 7, 64)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, 64, 32)) / 64, jnp.float32)
  zb, kb = z.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
  got = pallas_conv.sort_pool_conv3x3(zb, kb, True, True)
  assert got.dtype == jnp.bfloat16
  want = _reference(z, k, True)
  assert float(jnp.max(jnp.abs(got.astype(jnp.float32) - want))) <= 0.02 * float(jnp.max(jnp.abs(want)))
  g = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
  dk = jax.vjp(lambda k: pallas_conv.sort_pool_conv3x3(zb, k, True, True), kb)[1](g.astype(jnp.bfloat16))[0]
  assert dk.dtype == jnp.bfloat16
  dk_want = jax.vjp(lambda k: _reference(z, k, True), k)[1](g)[0]
  assert float(jnp.max(jnp.abs(dk.astype(jnp.float32) - dk_want))) <= 0.02 * float(jnp.max(jnp.abs(dk_want)))


@pytest.mark.parametrize("z_shape,k_shape,dtype,strides,padding,sort", [
    ((1, 8, 8, 64), (3, 3, 64, 64), jnp.float64, 1, PAD, True),  # float64: the reference
    ((1, 8, 8, 64), (3, 3, 64, 64), jnp.float32, 2, PAD, True),  # strided
    ((1, 8, 8, 64), (5, 5, 64, 64), jnp.float32, 1, ((2, 2), (2, 2)), True),
    ((1, 8, 8, 64), (3, 3, 64, 64), jnp.float32, 1, ((1, 0), (1, 1)), True),
    ((1, 8, 8, 48), (3, 3, 48, 64), jnp.float32, 1, PAD, True),  # not a power of two
    ((1, 8, 8, 16), (3, 3, 16, 64), jnp.float32, 1, PAD, True),  # 8 pairs: under Triton's dot size
    ((1, 8, 8, 64), (3, 3, 64, 24), jnp.float32, 1, PAD, True),  # over 16 outputs, not a power of two
    ((1, 1, 8, 64), (3, 3, 64, 64), jnp.float32, 1, PAD, True),  # a one-row image
    ((1, 8, 8, 1), (3, 3, 1, 64), jnp.float32, 1, PAD, False),  # FDnCNN's first layer
])
def test_supports_refuses_other_shapes(z_shape, k_shape, dtype, strides, padding, sort):
  assert not pallas_conv.supports(z_shape, k_shape, dtype, dtype, strides, padding, sort)


def test_mode_rejects_unknown_values(monkeypatch):
  monkeypatch.setenv(pallas_conv.ENV, "triton")
  with pytest.raises(ValueError, match="NEDENOISE_GPU_CONV"):
    pallas_conv.mode()
  monkeypatch.delenv(pallas_conv.ENV)
  assert pallas_conv.mode() == "xla"


def _count_pallas_calls(fn, *args) -> int:
  """The pallas_call equations of ``fn``'s program, nested calls (jit, custom_vjp) included."""
  def count(jaxpr) -> int:
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == "pallas_call"
      for v in eqn.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns") and eqn.primitive.name != "pallas_call":
            n += count(inner)
    return n

  return count(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("arch,kwargs,expected", [
    ("fdncnn", dict(features=32, depth=4), 3),  # the 2 inner layers and the last (the first does not qualify)
    ("drunet", dict(features=(16, 32), blocks=1), None),
])
def test_models_route_to_the_kernel_and_stay_equivariant(monkeypatch, arch, kwargs, expected):
  module = models.create(arch, mode="norm_equiv", blind=True, channels=1, **kwargs)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((2, 13, 11, 1)), jnp.float32)
  variables = module.init(jax.random.key(0), x, None)
  # The path is read when a program is traced, and JAX keeps traces per function: a fresh
  # function for each path.
  monkeypatch.setenv(pallas_conv.ENV, "xla")
  want = jax.jit(lambda x: module.apply(variables, x, None))(x)
  assert _count_pallas_calls(lambda x: module.apply(variables, x, None), x) == 0
  monkeypatch.setenv(pallas_conv.ENV, "interpret")
  calls = _count_pallas_calls(lambda x: module.apply(variables, x, None), x)
  assert (calls == expected) if expected is not None else (calls > 0)
  fused = jax.jit(lambda x: module.apply(variables, x, None))
  chex.assert_trees_all_close(fused(x), want, rtol=1e-5, atol=1e-5)
  equivariance.assert_normalization_equivariant(
      fused, x, pairs=((3.7, -250.0), (1e3, 1e4), (0.02, -0.5)), rtol=1e-4, atol=1e-4)
  # the training gradient goes through the kernel's custom VJP
  g = jax.grad(lambda v: jnp.sum(module.apply(v, x, None) ** 2))(variables)
  monkeypatch.setenv(pallas_conv.ENV, "xla")
  gr = jax.grad(lambda v: jnp.sum(module.apply(v, x, None) ** 2))(variables)
  for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gr), strict=True):
    # the sums run in another order: errors relative to each gradient's scale
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


# Lowering for CUDA needs no GPU: the Triton kernel is built for compute capability 9.0 (Hopper)
# when none is present, so these catch what Triton would refuse before a device run does.
TRITON = "xla.gpu.triton"


@pytest.mark.parametrize("shape,co,sort,dtype", [
    ((2, 50, 50, 64), 64, True, jnp.float32),       # FDnCNN's training patches
    ((1, 37, 45, 512), 512, True, jnp.float32),     # DRUNet's widest level, odd sizes
    ((16, 128, 128, 64), 64, False, jnp.bfloat16),  # DRUNet's training batch, bfloat16
    ((2, 50, 50, 64), 3, True, jnp.float32),        # a colour FDnCNN's last layer
])
def test_kernel_lowers_to_triton_for_cuda(shape, co, sort, dtype):
  z = jax.ShapeDtypeStruct(shape, dtype)
  k = jax.ShapeDtypeStruct((3, 3, shape[-1], co), dtype)
  f = jax.jit(lambda z, k: pallas_conv.sort_pool_conv3x3(z, k, sort, False))
  text = f.trace(z, k).lower(lowering_platforms=("cuda",)).as_text()
  assert TRITON in text  # Triton, not Mosaic GPU (which takes no gathers)
  # the training step: the forward kernel and the kernel-gradient one
  loss = lambda z, k: jnp.sum(pallas_conv.sort_pool_conv3x3(z, k, sort, False).astype(jnp.float32) ** 2)  # noqa: E731
  text = jax.jit(jax.grad(loss, (0, 1))).trace(z, k).lower(lowering_platforms=("cuda",)).as_text()
  assert text.count(TRITON) == 2 and "_wgrad" in text


@pytest.mark.parametrize("path,forward,wgrad", [("pallas", True, True), ("pallas_fwd", True, False),
                                                ("xla", False, False)])
def test_models_lowered_for_cuda_use_the_kernels_only_when_asked(monkeypatch, path, forward, wgrad):
  monkeypatch.setenv(pallas_conv.ENV, path)
  module = models.create("drunet", mode="norm_equiv", blind=True, channels=1, features=(32, 32, 64, 64),
                         blocks=1)
  x = jnp.ones((1, 24, 24, 1), jnp.float32)
  variables = module.init(jax.random.key(0), x, None)
  step = jax.jit(jax.value_and_grad(lambda v: jnp.sum(module.apply(v, x, None) ** 2)))
  text = step.trace(variables).lower(lowering_platforms=("cuda",)).as_text()
  assert (TRITON in text) == forward
  assert ("_wgrad" in text) == wgrad


def test_pallas_path_on_the_cpu_is_the_default_one(monkeypatch):
  """``pallas`` asks for the kernel on CUDA GPUs only: on the CPU the same values and gradients."""
  module = models.create("fdncnn", mode="norm_equiv", blind=True, channels=1, features=32, depth=4)
  x = jnp.asarray(np.random.default_rng(2).random((1, 9, 11, 1)), jnp.float32)
  variables = module.init(jax.random.key(1), x, None)
  out = {}
  for path in ("xla", "pallas"):
    monkeypatch.setenv(pallas_conv.ENV, path)
    out[path] = jax.jit(jax.value_and_grad(lambda v: jnp.sum(module.apply(v, x, None) ** 2)))(variables)
  chex.assert_trees_all_equal(out["pallas"], out["xla"])
