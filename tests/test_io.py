"""The one image reader (io.images) on TIFFs it must not lose; load_cached never serves stale weights."""

import jax
import numpy as np
from PIL import Image

import nedenoise_jax
from nedenoise_jax import loading, models
from nedenoise_jax.io import images


def test_tiffs_tifffile_cannot_decode_are_read_by_pillow(tmp_path):
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (7, 9), dtype=np.uint8)
  Image.fromarray(gray).save(tmp_path / "lzw.tif", compression="tiff_lzw")
  np.testing.assert_array_equal(images.read_image(str(tmp_path / "lzw.tif")), gray)
  np.testing.assert_allclose(images.read_float_image(str(tmp_path / "lzw.tif"))[..., 0], gray / 255.0, rtol=1e-6)
  pal = Image.fromarray(gray % 4).convert("P")
  pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
  pal.save(tmp_path / "palette.tif")
  rgb = images.read_float_image(str(tmp_path / "palette.tif"))
  assert rgb.shape == (7, 9, 3)  # colours, not palette indices
  np.testing.assert_allclose(rgb[gray % 4 == 1], [[1.0, 0.0, 0.0]] * int(np.sum(gray % 4 == 1)))


def test_multipage_tiff_first_page_for_data(tmp_path):
  import tifffile

  stack = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
  tifffile.imwrite(tmp_path / "stack.tif", stack)
  np.testing.assert_allclose(images.read_float_image(str(tmp_path / "stack.tif"))[..., 0], stack[0] / 65535.0)


def test_load_cached_sees_a_replaced_weights_file(tmp_path):
  module = models.create("fdncnn", mode="norm_equiv", blind=True, depth=2, features=4)
  x = np.zeros((1, 8, 8, 1), np.float32)
  v1, v2 = module.init(jax.random.key(1), x), module.init(jax.random.key(2), x)
  path = str(tmp_path / "w.nedenoise")
  nedenoise_jax.save_weights(path, module, v1)
  _, got1 = loading.load_cached(path)
  assert loading.load_cached(path)[1] is got1  # loaded once
  nedenoise_jax.save_weights(path, module, v2, overwrite=True)  # same size, maybe the same mtime
  _, got2 = loading.load_cached(path)
  for a, b in zip(jax.tree_util.tree_leaves(got2), jax.tree_util.tree_leaves(v2)):
    np.testing.assert_array_equal(a, b)
