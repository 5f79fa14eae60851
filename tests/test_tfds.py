"""tfds:NAME sources: builders prepared from a folder read the same pixels as folder:PATH."""

import os

import numpy as np
import pytest
from PIL import Image

from nedenoise_jax import data, tfds_datasets


@pytest.fixture
def folder(tmp_path):
  rng = np.random.default_rng(0)
  src = tmp_path / "imgs"
  (src / "sub").mkdir(parents=True)
  for i in range(4):
    Image.fromarray(rng.integers(0, 256, (30 + i, 41), dtype=np.uint8)).save(src / f"g{i}.png")
  Image.fromarray(rng.integers(0, 256, (33, 35), dtype=np.uint8)).save(src / "sub" / "g.bmp")
  return str(src)


def test_colour_builder(folder, tmp_path, monkeypatch):
  """Colour JPEGs are stored as decoded (lossless PNG); gray files are replicated exactly."""
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (33, 35, 3), dtype=np.uint8)).save(
      os.path.join(folder, "c.jpg"), quality=80)
  assert tfds_datasets.main(["cbsd432", "--manual_dir", folder]) == 0
  a, na = data.load_images(f"folder:{folder}", 3)
  b, nb = data.load_images("tfds:cbsd432", 3)
  assert na == nb and len(a) == 6
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_prepared_builder_reads_folder_pixels(folder, tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  assert tfds_datasets.main(["bsd400", "--manual_dir", folder]) == 0
  for channels in (1, 3):
    a, na = data.load_images(f"folder:{folder}", channels)
    b, nb = data.load_images("tfds:bsd400", channels)
    c, _ = data.load_images("tfds:bsd400:train", channels)
    assert na == nb and len(a) == 5
    for x, y, z in zip(a, b, c):
      assert x.dtype == y.dtype == np.float32
      np.testing.assert_array_equal(x, y)
      np.testing.assert_array_equal(x, z)
  # the same pixels make the same training batches
  kw = dict(patch_size=16, sigma_min=0.0, sigma_max=0.2, seed=3, global_batch=4, start_step=0, end_step=2)
  for p, q in zip(data.train_batches(a, **kw), data.train_batches(b, **kw)):
    np.testing.assert_array_equal(p["clean"], q["clean"])
    np.testing.assert_array_equal(p["sigma"], q["sigma"])


def test_errors(folder, tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  with pytest.raises(data.DataError, match="not prepared.*tfds_datasets set12"):
    data.load_images("tfds:set12", 1)
  with pytest.raises(data.DataError, match="unknown TFDS dataset 'no_such_set'"):
    data.load_images("tfds:no_such_set", 1)
  assert tfds_datasets.main(["set12", "--manual_dir", folder]) == 0
  with pytest.raises(data.DataError, match="no split 'train'.*test"):
    data.load_images("tfds:set12:train", 1)
  assert len(data.load_images("tfds:set12", 1)[0]) == 5  # default split: the only one
  with pytest.warns(UserWarning, match="smaller than the 32x32"):
    imgs, _ = data.load_images("tfds:set12", 1, min_size=32)
  assert len(imgs) == 3
  assert tfds_datasets.main(["bsd68", "--manual_dir", str(tmp_path / "missing")]) == 2
