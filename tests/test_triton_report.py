"""benchmarks/triton_report.py: what it reads from a lowering for CUDA, and how it judges a kernel.

Compiling the kernels needs the CUDA plugin's Triton compiler (not a test dependency); reading the
launch parameters of the lowered kernels and the arithmetic of the verdicts do not.
"""

import math
import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import triton_report  # noqa: E402

from nedenoise_jax.kernels import pallas_conv  # noqa: E402


def _kernels_readable() -> bool:
  """jaxlib <= 0.10.2 (the pinned one) leaves the Triton module to XLA, where it is read without a
  compiler; later ones compile it at lowering, with the CUDA plugin's compiler."""
  from jax._src.lib import triton, version

  return version <= (0, 10, 2) or (jax.devices() and triton.has_compilation_handler("cuda"))


@pytest.fixture(autouse=True)
def _default_precision():
  """The precision in effect is process state (the evaluate and analyze commands set "highest"
  for the process): these tests start at JAX's default."""
  with jax.default_matmul_precision(None):
    yield


needs_module = pytest.mark.skipif(not _kernels_readable(), reason="this jaxlib compiles Triton at lowering "
                                  "and has no CUDA plugin to do it")


@needs_module
@pytest.mark.parametrize("ci,dtype,warps", [
    (64, jnp.float32, 4),     # one block of 32 pairs: no loop over channel blocks
    (256, jnp.float32, 8),    # 128 pairs in two blocks: 4 warps spill (DRUNet's 256-channel level)
    (512, jnp.float32, 8),
    (256, jnp.bfloat16, 4),   # half the registers per operand: no spill with 4
])
def test_sorted_kernels_launch_with_the_warps_that_hold_their_registers(ci, dtype, warps):
  z = jax.ShapeDtypeStruct((2, 9, 11, ci), dtype)
  k = jax.ShapeDtypeStruct((3, 3, ci, ci), dtype)
  found = triton_report.capture_kernels(lambda z, k: pallas_conv.sort_pool_conv3x3(z, k, True, False), z, k)
  [kernel] = found
  assert kernel["name"] == "nedenoise_sort_pool_conv3x3"
  assert (kernel["num_warps"], kernel["num_stages"]) == (warps, 2)
  bm, bn, _, _ = pallas_conv._launch(9 * 11, ci // 2, ci, sort=True, dtype=dtype, algorithm=None)
  assert kernel["grid"] == [2, -(-9 * 11 // bm), ci // bn]
  assert kernel["ir"]  # the Triton module the GPU compiles


@needs_module
def test_the_training_gradient_has_both_kernels():
  z = jax.ShapeDtypeStruct((2, 9, 11, 32), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, 32, 32), jnp.float32)
  loss = lambda z, k: jnp.sum(pallas_conv.sort_pool_conv3x3(z, k, False, False) ** 2)  # noqa: E731
  names = [x["name"] for x in triton_report.capture_kernels(jax.grad(loss, (0, 1)), z, k)]
  assert sorted(names) == ["nedenoise_reflect_conv3x3", "nedenoise_reflect_conv3x3_wgrad"]


def test_occupancy_against_a_hand_count():
  # 255 registers: 8160 per warp, allocated as 8192; 4 warps take 32768 of 65536: 2 programs, 8 warps
  assert triton_report.occupancy(255, 16384, 4) == 8
  # 64 registers: 2048 per warp; 4 warps take 8192: 8 programs, 32 warps
  assert triton_report.occupancy(64, 8192, 4) == 32
  # shared memory first: 3 programs of 72 KiB fit in an SM's 228 KiB
  assert triton_report.occupancy(32, 72 * 1024, 4) == 12
  # the warps first: 64 per SM
  assert triton_report.occupancy(16, 1024, 4) == 64


def test_problems_name_spills_shared_memory_and_errors():
  ok = {"shared_bytes": 16384, "spill_bytes": 0}
  assert triton_report.problems(ok) == []
  assert triton_report.problems({**ok, "spill_bytes": 768}) == ["768 bytes of register spills"]
  too_big = triton_report.problems({**ok, "shared_bytes": 300 * 1024})
  assert len(too_big) == 1 and "shared memory" in too_big[0]
  assert triton_report.problems({"error": "RuntimeError: x"}) == ["RuntimeError: x"]


@needs_module
@pytest.mark.parametrize("sort,bk", [(True, 16), (False, 32)])
def test_at_highest_both_kernels_take_three_tf32_products_with_8_warps(sort, bk):
  ci = 64
  z = jax.ShapeDtypeStruct((2, 9, 11, ci), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, ci, ci), jnp.float32)
  loss = lambda z, k: jnp.sum(pallas_conv.sort_pool_conv3x3(z, k, sort, False) ** 2)  # noqa: E731
  with jax.default_matmul_precision("highest"):
    assert pallas_conv._dot_algorithm(jnp.float32, False) == jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3
    found = triton_report.capture_kernels(jax.grad(loss, (0, 1)), z, k)
  assert len(found) == 2 and all(x["num_warps"] == 8 for x in found)
  wgrad = next(x for x in found if x["name"].endswith("_wgrad"))
  programs = 9 * ((ci // 2 if sort else ci) // bk) * (ci // 64)  # taps x blocks of bk rows x of 64 columns
  splits = pallas_conv._wgrad_splits(2 * 9 * 11, 64, programs)
  assert math.prod(wgrad["grid"]) == programs * splits  # (Triton's grid has 3 axes: Pallas merges two)
  # bfloat16 and the interpreter keep the precision in effect
  assert pallas_conv._dot_algorithm(jnp.bfloat16, False) is None
  assert pallas_conv._dot_algorithm(jnp.float32, True) is None
