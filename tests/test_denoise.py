"""denoise(): tiling, dtypes and ranges, alpha, sigma estimation, bad input; the CLI."""

import importlib
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import nedenoise_jax as nj
from nedenoise_jax import models

from conftest import ROOT, TINY

# nedenoise_jax.denoise is the function; the module (and CLI) of the same name:
dn = importlib.import_module("nedenoise_jax.denoise")


def _model(arch="fdncnn", mode="norm_equiv", blind=True, channels=1, seed=0):
  module = models.create(arch, mode=mode, blind=blind, channels=channels, **TINY[arch])
  x = jnp.zeros((1, 16, 16, channels))
  sigma = None if blind else jnp.zeros((1,))
  return module, nj.equivariance.random_variables(module, x, sigma, seed=seed)


@pytest.mark.parametrize("arch", ["fdncnn", "dncnn"])
@pytest.mark.parametrize("blind", [True, False])
def test_tiled_equals_whole(arch, blind):
  model = _model(arch, blind=blind)
  img = np.random.default_rng(0).random((45, 61)).astype(np.float32)
  whole = dn.denoise(img, model, sigma=0.1)
  for tile in (8, 16, 24):
    tiled = dn.denoise(img, model, sigma=0.1, tile=tile)
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_tile_progress_bar(capsys):
  model = _model()
  img = np.random.default_rng(2).random((40, 30)).astype(np.float32)
  quiet = dn.denoise(img, model, tile=16)
  assert "tiles" not in capsys.readouterr().err
  shown = dn.denoise(img, model, tile=16, progress=True)
  assert "6/6" in capsys.readouterr().err  # 3 x 2 tiles
  np.testing.assert_array_equal(shown, quiet)
  dn.denoise(img, model, progress=True)  # one window: no bar
  assert "tiles" not in capsys.readouterr().err


def test_tiled_drunet_close_to_whole():
  """DRUNet's receptive field exceeds any practical overlap: close, not equal (README)."""
  model = _model("drunet", mode="norm_equiv")
  img = np.random.default_rng(1).random((70, 90)).astype(np.float32)
  whole = dn.denoise(img, model)
  tiled = dn.denoise(img, model, tile=32, overlap=32)
  assert tiled.shape == whole.shape
  assert np.max(np.abs(tiled - whole)) < 0.05 * np.max(np.abs(whole))


def test_layouts_dtypes_and_alpha():
  model = _model()
  rng = np.random.default_rng(0)
  u8 = rng.integers(0, 256, (2, 19, 23, 1), dtype=np.uint8)
  out = dn.denoise(u8, model)
  assert out.shape == u8.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(dn.denoise(u8[0, :, :, 0], model), out[0, :, :, 0])
  np.testing.assert_array_equal(dn.denoise(u8[1], model), out[1])
  u16 = rng.integers(0, 65536, (19, 23), dtype=np.uint16)
  assert dn.denoise(u16, model).dtype == np.uint16
  # An NE model gives the same result on any affine rescaling of a float image.
  f = rng.random((19, 23)).astype(np.float64)
  a = dn.denoise(f, model)
  b = dn.denoise(f * 4000.0 - 123.0, model)
  assert b.dtype == np.float64
  np.testing.assert_allclose((b + 123.0) / 4000.0, a, atol=1e-5)
  rgba = rng.integers(0, 256, (19, 23, 4), dtype=np.uint8)
  out = dn.denoise(rgba, _model(channels=3))
  assert out.shape == rgba.shape
  np.testing.assert_array_equal(out[..., 3], rgba[..., 3])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8, 2)), "channel count 2"),
    (np.zeros((8, 8, 5)), "channel count 5"),
    (np.zeros((0, 8)), "empty"),
    (np.full((8, 8), np.nan), "NaN"),
    (np.zeros((2, 2, 2, 2, 1)), "shape"),
])
def test_bad_arrays(bad, match):
  with pytest.raises(dn.ImageError, match=match):
    dn.denoise(bad, _model())


def test_channel_mismatch():
  with pytest.raises(dn.ImageError, match="3-channel"):
    dn.denoise(np.zeros((8, 8)), _model(channels=3))


def test_estimate_sigma():
  rng = np.random.default_rng(0)
  smooth = np.add.outer(np.linspace(0, 50, 256), np.linspace(0, 80, 256))
  for s in (2.0, 10.0, 40.0):
    est = dn.estimate_sigma(smooth + rng.normal(0, s, smooth.shape))
    assert abs(est - s) < 0.05 * s, (s, est)


def test_nonblind_uses_estimate_when_sigma_missing():
  model = _model(blind=False)
  rng = np.random.default_rng(0)
  img = 0.5 + 0.1 * rng.standard_normal((32, 32)).astype(np.float32)
  est = dn.estimate_sigma(img)
  np.testing.assert_allclose(dn.denoise(img, model), dn.denoise(img, model, sigma=est), atol=1e-6)


def test_pretrained_models_load_and_are_equivariant():
  names = nj.pretrained_names()
  assert {"gray-norm_equiv", "color-norm_equiv", "gray-ordinary"} <= set(names)
  module, variables = nj.load("pretrained:gray-norm_equiv")
  assert models.describe(module)["mode"] == "norm_equiv"
  x = jnp.asarray(np.random.default_rng(0).random((1, 21, 17, 1)), jnp.float32)
  nj.equivariance.assert_normalization_equivariant(lambda x: module.apply(variables, x), x, rtol=1e-5)
  with pytest.raises(FileNotFoundError, match="gray-norm_equiv"):
    nj.load("pretrained:no-such-model")


def _cli(*args, cwd):
  return subprocess.run([sys.executable, "-m", "nedenoise_jax.denoise", *args], cwd=cwd,
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})


def test_cli_files(tmp_path):
  from PIL import Image
  import tifffile

  rng = np.random.default_rng(0)
  src = tmp_path / "in"
  src.mkdir()
  Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(src / "g.png")
  Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)).save(src / "rgba.png")
  tifffile.imwrite(src / "u16.tif", rng.integers(0, 65536, (20, 24), dtype=np.uint16))
  tifffile.imwrite(src / "f.tif", (rng.random((20, 24, 3)) * 1e4 - 50).astype(np.float32), photometric="rgb")
  (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  out = tmp_path / "out"
  r = _cli(str(src), "--out", str(out), cwd=tmp_path)
  assert r.returncode == 1, r.stderr  # one file failed, the others were written
  assert "broken.png" in r.stderr
  assert "RuntimeWarning" not in r.stderr  # runpy's warning about `-m nedenoise_jax.denoise`
  assert "denoised 4 of 5" in r.stdout
  assert np.asarray(Image.open(out / "g.png")).shape == (20, 24)
  rgba_in, rgba_out = np.asarray(Image.open(src / "rgba.png")), np.asarray(Image.open(out / "rgba.png"))
  np.testing.assert_array_equal(rgba_out[..., 3], rgba_in[..., 3])
  assert tifffile.imread(out / "u16.tif").dtype == np.uint16
  f = tifffile.imread(out / "f.tif")
  assert f.dtype == np.float32 and f.shape == (20, 24, 3) and f.max() > 100  # range kept
  # existing outputs are not replaced without --force; inputs never
  before = (out / "g.png").read_bytes()
  r = _cli(str(src / "g.png"), "--out", str(out), cwd=tmp_path)
  assert r.returncode == 2 and "--force" in r.stderr
  assert (out / "g.png").read_bytes() == before
  r = _cli(str(src / "g.png"), "--out", str(src), "--force", cwd=tmp_path)
  assert r.returncode == 2 and "overwrite the input" in r.stderr
  assert not any(p.name.startswith(".tmp") for p in out.iterdir())


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_cli_same_image_in_every_range_and_bit_depth(tmp_path, which):
  """One noisy image stored as float [0, 1], float [1000, 39250], 16-bit and 8-bit.

  Built from 8-bit values, so the four files hold exactly the same picture up
  to an affine map. An NE model's outputs agree after mapping back: the two
  float files to 1e-4 of the range, the integer files to within their rounding.
  ``default``: the command's own default gray model (no ``--model``), whichever
  ``denoise.DEFAULT_MODELS`` ships.
  """
  from PIL import Image
  import tifffile

  if which == "tiny":
    module, variables = _model()
    model_flags = ["--model", str(nj.save_weights(tmp_path / "ne.nedenoise", module, variables))]
  else:
    model_flags = []
  rng = np.random.default_rng(3)
  yy, xx = np.mgrid[0:37, 0:53]
  clean = 128 + 80 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
  u8 = np.clip(np.rint(clean + rng.normal(0, 25, clean.shape)), 0, 255).astype(np.uint8)
  unit = u8.astype(np.float32) / 255
  lo, hi = 1000.0, 39250.0
  src = tmp_path / "in"
  src.mkdir()
  tifffile.imwrite(src / "unit.tif", unit)
  tifffile.imwrite(src / "wide.tif", (unit.astype(np.float64) * (hi - lo) + lo).astype(np.float32))
  tifffile.imwrite(src / "u16.tif", u8.astype(np.uint16) * 257)  # 65535 / 255 = 257: exact
  Image.fromarray(u8).save(src / "u8.png")
  out = tmp_path / "out"
  r = _cli(str(src), "--out", str(out), *model_flags, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  f = tifffile.imread(out / "unit.tif").astype(np.float64)
  wide = (tifffile.imread(out / "wide.tif").astype(np.float64) - lo) / (hi - lo)
  assert np.max(np.abs(wide - f)) <= 1e-4 * (f.max() - f.min())
  u16 = tifffile.imread(out / "u16.tif")
  assert u16.dtype == np.uint16
  np.testing.assert_allclose(u16 / 65535.0, np.clip(f, 0, 1), rtol=0, atol=0.5 / 65535 + 1e-5)
  out8 = np.asarray(Image.open(out / "u8.png"))
  assert out8.dtype == np.uint8
  np.testing.assert_allclose(out8 / 255.0, np.clip(f, 0, 1), rtol=0, atol=0.5 / 255 + 1e-5)
  assert np.abs(f - unit).max() > 0.05  # the model did change the image


@pytest.mark.parametrize("arch,blind", [("ffdnet", False), ("cbdnet", True), ("cbdnet", False)])
def test_noise_maps_tiled_equals_whole(arch, blind):
  """A per-pixel map is cut into the same tiles as the image: the tiled result equals the
  whole one (receptive radius known), for FFDNet with a map and CBDNet with its estimate."""
  model = _model(arch, blind=blind)
  rng = np.random.default_rng(0)
  img = rng.random((45, 61)).astype(np.float32)
  noise_map = (0.05 + 0.1 * rng.random((45, 61))).astype(np.float32)
  sigma = None if blind else noise_map
  whole = dn.denoise(img, model, sigma=sigma)
  for tile in (16, 24):
    np.testing.assert_allclose(dn.denoise(img, model, sigma=sigma, tile=tile), whole, atol=1e-5, rtol=0)
  if not blind:
    # A constant map is the scalar sigma.
    np.testing.assert_allclose(dn.denoise(img, model, sigma=np.full((45, 61), 0.1, np.float32)),
                               dn.denoise(img, model, sigma=0.1), atol=1e-6)
    # map_scale multiplies the given map.
    np.testing.assert_allclose(dn.denoise(img, model, sigma=noise_map, map_scale=2.0),
                               dn.denoise(img, model, sigma=2 * noise_map), atol=1e-6)
  else:
    assert np.max(np.abs(dn.denoise(img, model, map_scale=3.0) - whole)) > 1e-4


def test_estimate_noise_map():
  rng = np.random.default_rng(3)
  clean = np.full((64, 96), 120.0)
  img = np.clip(clean + np.linspace(5, 30, 96)[None, :] * rng.standard_normal((64, 96)), 0, 255)
  m = nj.estimate_noise_map(img.astype(np.uint8))
  assert m.shape == (64, 96, 1) and m.dtype == np.float32
  assert m[:, :20].mean() < m[:, -20:].mean()  # it sees the gradient, in 0-255 units
  assert 15 < m[:, -20:].mean() < 40
  batch = nj.estimate_noise_map(np.stack([img, img])[..., None].astype(np.float32), method="global")
  assert batch.shape == (2, 64, 96, 1) and np.ptp(batch) == 0
  module, variables = _model("cbdnet", blind=True)
  est = nj.estimate_noise_map(img.astype(np.float32), (module, variables))
  np.testing.assert_allclose(est, np.asarray(models.estimate_map(module, variables, img[None, :, :, None]
                                                                .astype(np.float32)))[0], rtol=1e-5, atol=1e-6)
  u16 = nj.estimate_noise_map((img * 257).astype(np.uint16), (module, variables))
  assert u16.shape == (64, 96, 1)
  with pytest.raises(ValueError, match="needs a blind CBDNet"):
    nj.estimate_noise_map(img, _model("ffdnet", blind=False))
  with pytest.raises(nj.denoise.__globals__["ImageError"], match="unknown noise estimator"):
    nj.estimate_noise_map(img, method="wavelet")


@pytest.mark.parametrize("bad,match", [(np.ones((3, 3)), r"noise map of shape \(3, 3\)"),
                                       (np.full((20, 24), -1.0), "negative, NaN"),
                                       (np.full((20, 24), np.nan), "negative, NaN"),
                                       ("median", "expected a number, a map")])
def test_bad_noise_maps(bad, match):
  with pytest.raises(ValueError, match=match):
    dn.denoise(np.zeros((20, 24), np.float32), _model("ffdnet", blind=False), sigma=bad)


def test_maps_and_map_scale_need_a_model_that_uses_them():
  img = np.zeros((20, 24), np.float32)
  blind = _model("fdncnn", blind=True)
  with pytest.raises(ValueError, match="the model is blind .* it takes no noise map"):
    dn.denoise(img, blind, sigma=np.full((20, 24), 0.1))
  with pytest.raises(ValueError, match="the model is blind"):
    dn.denoise(img, blind, sigma="local")
  with pytest.raises(ValueError, match="map_scale=2.0: the model .* has no noise map to scale"):
    dn.denoise(img, blind, map_scale=2.0)
  dn.denoise(img, blind, sigma=0.1)  # a number is ignored by blind models, as before


def test_repeated_calls_compile_once_per_model_and_shape(monkeypatch):
  # A loop over images (or the CLI over a folder) traces and compiles the model once per input
  # shape, and reads the weights once per name.
  import collections

  from nedenoise_jax import loading

  reads = []
  load = loading.load
  monkeypatch.setattr(loading, "load", lambda p, *a, **k: reads.append(p) or load(p, *a, **k))
  monkeypatch.setattr(loading, "_CACHE", collections.OrderedDict())  # as in a fresh process
  module, _ = loading.load_cached("pretrained:gray-norm_equiv")
  apply = dn._make_apply(module, True, False)
  before = apply._cache_size()  # other tests of this process may have run other shapes
  rng = np.random.default_rng(0)
  outs = [nj.denoise(rng.integers(0, 256, (37, 53), dtype=np.uint8), "pretrained:gray-norm_equiv")
          for _ in range(3)]
  assert len(reads) == 1
  assert apply._cache_size() == before + 1  # one trace, one executable, for the three calls
  nj.denoise(rng.integers(0, 256, (29, 61), dtype=np.uint8), "pretrained:gray-norm_equiv")
  assert apply._cache_size() == before + 2 and len(reads) == 1  # a new shape is a new program
  assert all(o.shape == (37, 53) for o in outs)
