"""Exported weight files: round trip, strictness, no half-written or overwritten files."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nedenoise_jax
from nedenoise_jax import models
from nedenoise_jax.io import weights


@pytest.mark.parametrize("arch,mode,blind,kw", [
    ("fdncnn", "norm_equiv", False, dict(features=8, depth=3, parametrization="roll")),
    ("drunet", "wrapped", True, dict(features=(8, 16), blocks=1)),
    ("dncnn", "ordinary", True, dict(features=8, depth=4)),
])
def test_roundtrip(tmp_path, arch, mode, blind, kw, random_variables):
  module = models.create(arch, mode=mode, blind=blind, channels=3, **kw)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 10, 12, 3)), jnp.float32)
  sigma = None if blind else 0.1
  v = random_variables(module, x, sigma)
  path = nedenoise_jax.save_weights(tmp_path / "m.msgpack", module, v, metadata={"steps": 3})
  m2, v2 = nedenoise_jax.load(path)
  assert m2 == module
  np.testing.assert_array_equal(m2.apply(v2, x, sigma), module.apply(v, x, sigma))
  header, _ = weights.read_weights(path)
  assert header["metadata"] == {"steps": 3} and header["model"]["arch"] == arch
  assert os.listdir(tmp_path) == ["m.msgpack"]  # no temporary file left behind


def test_no_silent_overwrite(tmp_path, random_variables):
  module = models.create("fdncnn", mode="norm_equiv", blind=True, features=4, depth=2)
  v = random_variables(module, jnp.zeros((1, 8, 8, 1)))
  path = tmp_path / "w.msgpack"
  path.write_bytes(b"precious")
  with pytest.raises(FileExistsError, match="overwrite=True"):
    nedenoise_jax.save_weights(path, module, v)
  assert path.read_bytes() == b"precious"
  nedenoise_jax.save_weights(path, module, v, overwrite=True)
  nedenoise_jax.load(path)


def test_strict_diff_lists_every_mismatch(random_variables):
  small = models.create("fdncnn", mode="norm_equiv", blind=True, features=4, depth=3)
  big = models.create("fdncnn", mode="norm_equiv", blind=True, features=6, depth=2)
  v = random_variables(big, jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError) as e:
    weights.merge_strict(small, v)
  msg = str(e.value)
  assert "missing:    params/conv_2/kernel (3, 3, 4, 1)" in msg
  assert "shape:      params/conv_0/kernel is (3, 3, 1, 6), expected (3, 3, 1, 4)" in msg
  assert "shape:      params/conv_1/kernel is (3, 3, 6, 1), expected (3, 3, 4, 4)" in msg
  extra = {"params": {**v["params"], "head": {"kernel": np.ones(3)}}}
  with pytest.raises(ValueError, match="unexpected: params/head/kernel"):
    weights.merge_strict(big, extra)


def test_expect_and_bad_files(tmp_path, random_variables):
  module = models.create("fdncnn", mode="norm_equiv", blind=True, features=4, depth=2)
  path = nedenoise_jax.save_weights(tmp_path / "w.msgpack", module,
                                    random_variables(module, jnp.zeros((1, 8, 8, 1))))
  with pytest.raises(ValueError, match=r"holds another model:\n  arch: file has 'fdncnn', "
                     r"expected 'drunet'\n  mode: file has 'norm_equiv', expected 'ordinary'"):
    nedenoise_jax.load(path, expect={"arch": "drunet", "mode": "ordinary", "blind": True})
  bad = tmp_path / "bad.msgpack"
  bad.write_bytes(b"\x00garbage")
  with pytest.raises(ValueError, match="bad.msgpack is not a nedenoise-jax weights file"):
    nedenoise_jax.load(bad)
  with pytest.raises(FileNotFoundError, match="no weights file or training workdir"):
    nedenoise_jax.load(tmp_path / "missing.msgpack")
  with pytest.raises(ValueError, match="holds no training checkpoint"):
    nedenoise_jax.load(tmp_path)
