"""The XLA options our programs compile with on the CPU."""

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import ops, xla_options


def _conv(x, k):
  return ops.conv2d(ops.reflect_pad(x, ((1, 1), (1, 1))), k)


def test_cpu_options_keep_convolutions_in_xla(monkeypatch):
  monkeypatch.delenv("NEDENOISE_XLA_DEFAULTS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert xla_options.compiler_options("cpu") == xla_options.CPU_OPTIONS
  assert xla_options.compiler_options("gpu") == {}
  x, k = jnp.ones((1, 9, 9, 4)), jnp.ones((3, 3, 4, 4)) / 36
  ours = xla_options.jit(_conv).lower(x, k).compile().as_text()
  assert "__ynn_fusion" not in ours
  np.testing.assert_allclose(xla_options.jit(_conv)(x, k), jax.jit(_conv)(x, k), rtol=1e-6)
  # Decorator forms, and extra options merged in.
  assert float(xla_options.jit(lambda x: x * 2)(jnp.float32(2))) == 4.0
  assert float(xla_options.jit(static_argnums=1)(lambda x, n: x * n)(jnp.float32(2), 3)) == 6.0


def test_user_settings_win(monkeypatch):
  monkeypatch.setenv("NEDENOISE_XLA_DEFAULTS", "1")
  assert xla_options.compiler_options("cpu") == {}
  monkeypatch.delenv("NEDENOISE_XLA_DEFAULTS")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
  assert xla_options.compiler_options("cpu") == {}
