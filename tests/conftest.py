"""Test setup: 8 fake CPU devices, as on a small accelerator host."""

import os

# Must happen before jax initializes its backends.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# Tiny test models spend nearly all their time in XLA's LLVM backend; its
# optimization level does not change what the tests check (exact properties),
# and level 0 makes the suite about 2.5x faster on 2 cores. Set
# NEDENOISE_TEST_FULL_OPT=1 to run the suite with full optimization.
if not os.environ.get("NEDENOISE_TEST_FULL_OPT") and "xla_backend_optimization_level" not in _flags:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from nedenoise_jax import equivariance  # noqa: E402


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
  """Runs a test in float32 and, with x64 enabled, in float64."""
  if request.param == "float64":
    with jax.enable_x64(True):
      yield jnp.float64
  else:
    yield jnp.float32


@pytest.fixture
def random_variables():
  """``random_variables(module, x, sigma=None, seed=0)``: random weights, see equivariance."""
  return lambda module, x, sigma=None, seed=0: equivariance.random_variables(
      module, x, sigma, seed=seed)


TINY = {
    "fdncnn": dict(features=8, depth=4),
    "drunet": dict(features=(8, 8, 16, 16), blocks=1),
    "dncnn": dict(features=8, depth=4),
    "ffdnet": dict(features=8, depth=4),
    "cbdnet": dict(estimator_features=8, estimator_depth=3, denoiser="fdncnn", features=(8,), depth=3),
}


@pytest.fixture
def tiny_kwargs():
  """Small architecture arguments per arch, for fast tests."""
  return TINY


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_train_command(workdir, *extra, steps=40, batch_size=4, devices=2):
  """``python train.py`` on a tiny NE FDnCNN and built-in data, for subprocess tests."""
  import sys

  return [sys.executable, os.path.join(ROOT, "train.py"), "--config",
          os.path.join(ROOT, "configs", "quickstart.py"), "--workdir", str(workdir),
          "--config.model.features=4", "--config.model.depth=3",
          f"--config.train.batch_size={batch_size}", "--config.train.patch_size=16",
          "--config.data.train=builtin:deadleaves:4", "--config.data.val=",
          "--config.train.schedule=constant", "--config.train.log_every=1",
          f"--config.train.steps={steps}", "--config.checkpoint.every_steps=5",
          f"--cpu_devices={devices}", *extra]


@pytest.fixture
def train_command():
  return tiny_train_command
