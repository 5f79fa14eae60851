"""TIFF stacks (ImageJ, OME, shaped, plain pages): read and written with their structure, and
denoised plane by plane, each plane as if alone; the command keeps the stack's structure."""

import importlib
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tifffile

import nedenoise_jax as nj
from nedenoise_jax import models
from nedenoise_jax.io import images

from conftest import ROOT, TINY

dn = importlib.import_module("nedenoise_jax.denoise")


def _model(channels=1, blind=True, arch="fdncnn"):
  module = models.create(arch, mode="norm_equiv", blind=blind, channels=channels, **TINY[arch])
  x = jnp.zeros((1, 16, 16, channels))
  return module, nj.equivariance.random_variables(module, x, None if blind else jnp.zeros((1,)))


def _write_pages(path, planes):
  """A plain multi-page TIFF: one page per plane, no metadata (as many instruments write)."""
  with tifffile.TiffWriter(path) as w:
    for p in planes:
      w.write(p, metadata=None, contiguous=False)


def _layout(path):
  with tifffile.TiffFile(path) as tf:
    s = tf.series[0]
    return s.axes, s.shape, s.dtype, len(tf.pages)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("pages", [3, 4, 5])
def test_plain_multipage_is_a_stack_not_colour(tmp_path, pages):
  """3 or 4 pages are not RGB(A) and 5 are not 64 channels: a stack of gray planes."""
  path = str(tmp_path / "s.tif")
  data = RNG.integers(0, 4096, (pages, 20, 24), dtype=np.uint16)
  _write_pages(path, data)
  st = images.read_stack(path)
  assert st.axes == "IYX" and st.planes == pages and st.metadata["kind"] == "pages"
  np.testing.assert_array_equal(st.data, data)
  with pytest.raises(images.ImageError, match=f"s.tif: a stack of {pages} pages .*read_stack"):
    images.read_image(path)
  assert images.read_image(path, first_page=True).shape == (20, 24)  # training reads page 1
  assert images.is_stack(path)


def test_planar_rgb_stays_rgb_only_when_metadata_says_so(tmp_path):
  rgb = RNG.integers(0, 256, (3, 20, 24), dtype=np.uint8)
  tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", planarconfig="separate")
  tifffile.imwrite(tmp_path / "gray3.tif", rgb, photometric="minisblack")
  assert images.read_image(str(tmp_path / "rgb.tif")).shape == (20, 24, 3)
  assert not images.is_stack(str(tmp_path / "rgb.tif"))
  assert images.read_stack(str(tmp_path / "rgb.tif")).axes == "SYX"
  assert images.is_stack(str(tmp_path / "gray3.tif"))
  assert images.read_stack(str(tmp_path / "gray3.tif")).planes == 3


def _imagej(path, data, axes):
  tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0),
                   metadata={"axes": axes, "spacing": 2.5, "unit": "um", "finterval": 0.5})


def _ome(path, data, axes):
  tifffile.imwrite(path, data, ome=True, resolution=(2.0, 2.0), resolutionunit="CENTIMETER",
                   metadata={"axes": axes, "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm",
                             "PhysicalSizeZ": 1.5, "Channel": {"Name": ["GFP"]}})


@pytest.mark.parametrize("writer, axes, shape, dtype", [
    (_imagej, "ZYX", (4, 17, 23), np.uint16),
    (_imagej, "TYX", (3, 17, 23), np.float32),
    (_imagej, "TZCYX", (2, 3, 2, 17, 23), np.uint16),
    (_ome, "ZYX", (3, 17, 23), np.uint16),
    (_ome, "TZYX", (2, 2, 17, 23), np.uint8),
])
def test_stack_round_trip_keeps_structure(tmp_path, writer, axes, shape, dtype):
  src, dst = str(tmp_path / "in.tif"), str(tmp_path / "out.tif")
  data = (RNG.random(shape) * (300 if dtype == np.float32 else np.iinfo(dtype).max)).astype(dtype)
  writer(src, data, axes)
  st = images.read_stack(src)
  assert st.axes == axes and st.data.shape == shape and st.data.dtype == dtype
  images.write_stack(dst, st)
  assert _layout(dst) == _layout(src)
  again = images.read_stack(dst)
  np.testing.assert_array_equal(again.data, data)
  assert again.metadata == st.metadata
  if writer is _imagej:
    assert again.metadata["imagej"]["spacing"] == 2.5 and again.metadata["imagej"]["unit"] == "um"
    assert again.metadata["resolution"] == ((4, 1), (4, 1))
  else:
    assert again.metadata["ome"]["PhysicalSizeX"] == 0.25 and again.metadata["ome"]["PhysicalSizeZ"] == 1.5
    assert again.metadata["ome"]["Channel"] == {"Name": ["GFP"]}


@pytest.mark.parametrize("axes, shape, dtype, channels", [
    ("ZYX", (5, 21, 19), np.uint16, 1),
    ("TZCYX", (2, 2, 3, 21, 19), np.float32, 1),  # C: microscopy channels, each gray
    ("ZYXS", (3, 21, 19, 3), np.uint8, 3),        # an RGB z-stack
    ("SYX", (3, 21, 19), np.uint8, 3),            # planar RGB
    ("YXZ", (21, 19, 4), np.float64, 1),          # planes on the last axis
])
def test_denoise_stack_equals_each_plane_alone(axes, shape, dtype, channels):
  model = _model(channels)
  data = RNG.random(shape)
  data = (data * np.iinfo(dtype).max).astype(dtype) if np.issubdtype(dtype, np.integer) else (
      (data * 500 - 100).astype(dtype))
  out = dn.denoise_stack(data, axes, model, batch=2)
  assert out.shape == data.shape and out.dtype == data.dtype
  ax = list(axes)
  moved = np.moveaxis(data, [ax.index(c) for c in "YX"] + ([ax.index("S")] if "S" in ax else []),
                      [-3, -2, -1] if "S" in ax else [-2, -1])
  got = np.moveaxis(out, [ax.index(c) for c in "YX"] + ([ax.index("S")] if "S" in ax else []),
                    [-3, -2, -1] if "S" in ax else [-2, -1])
  lead = moved.shape[:-3] if "S" in ax else moved.shape[:-2]
  for idx in np.ndindex(*lead):
    np.testing.assert_array_equal(got[idx], dn.denoise(moved[idx], model))


def test_denoise_stack_sigma_map_and_gray_alpha():
  model = _model(blind=False)
  data = RNG.random((3, 16, 24)).astype(np.float32)
  sigma_map = RNG.random((3, 16, 24)).astype(np.float32) * 0.1
  out = dn.denoise_stack(data, "ZYX", model, sigma_map)
  for z in range(3):
    np.testing.assert_array_equal(out[z], dn.denoise(data[z], model, sigma_map[z]))
  la = RNG.integers(0, 256, (2, 16, 24, 2), dtype=np.uint8)
  out = dn.denoise_stack(la, "ZYXS", _model())
  np.testing.assert_array_equal(out[..., 1], la[..., 1])  # alpha kept


@pytest.mark.parametrize("axes, shape, match", [
    ("ZY", (2, 8, 8), "one distinct letter per axis, with Y and X"),
    ("ZZX", (2, 8, 8), "one distinct letter"),
    ("ZXC", (2, 8, 8), "with Y and X"),
    ("YXS", (8, 8, 5), "the S axis has 5 samples"),
])
def test_denoise_stack_bad_axes(axes, shape, match):
  with pytest.raises(images.ImageError, match=match):
    dn.denoise_stack(np.zeros(shape, np.float32), axes, _model())


def test_cli_stacks_keep_structure_and_each_plane(tmp_path):
  """The command on 3-, 4- and 5-slice uint16 ImageJ stacks, a plain multi-page file and an
  OME TZYX stack: the same pages, axes, dtype and metadata back; each plane denoised alone."""
  module, variables = _model()
  weights = nj.save_weights(str(tmp_path / "tiny.nedenoise"), module, variables)
  src = tmp_path / "in"
  src.mkdir()
  stacks = {}
  for k in (3, 4, 5):
    stacks[f"z{k}.tif"] = (_imagej, RNG.integers(0, 4096, (k, 20, 24), dtype=np.uint16), "ZYX")
  stacks["ome.tif"] = (_ome, RNG.integers(0, 65536, (2, 2, 20, 24), dtype=np.uint16), "TZYX")
  for name, (writer, data, axes) in stacks.items():
    writer(str(src / name), data, axes)
  pages = RNG.integers(0, 256, (3, 20, 24), dtype=np.uint8)
  _write_pages(str(src / "pages.tif"), pages)
  stacks["pages.tif"] = (None, pages, "IYX")
  r = subprocess.run([sys.executable, "-m", "nedenoise_jax.denoise", str(src), "--out",
                      str(tmp_path / "out"), "--model", weights], capture_output=True, text=True,
                     env={**os.environ, "PYTHONPATH": ROOT})
  assert r.returncode == 0, r.stderr
  assert "denoised 5 of 5 image(s)" in r.stdout
  for name, (_, data, axes) in stacks.items():
    out = str(tmp_path / "out" / name)
    assert _layout(out) == _layout(str(src / name))
    got, want = images.read_stack(out), images.read_stack(str(src / name))
    assert got.axes == axes and got.metadata == want.metadata
    planes = data.reshape(-1, 20, 24)
    for i, plane in enumerate(got.data.reshape(-1, 20, 24)):
      np.testing.assert_array_equal(plane, dn.denoise(planes[i], (module, variables)))
