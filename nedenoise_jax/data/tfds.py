"""TFDS builders for the standard denoising sets, prepared from local folders (no TensorFlow).

python -m nedenoise_jax.tfds_datasets bsd400 --manual_dir PATH/TO/bsd400
python -m nedenoise_jax.tfds_datasets bsd400 set12 --data_root PATH/TO/data   # data/train/bsd400, data/test/set12
python train.py --config configs/fdncnn.py --config.data.train=tfds:bsd400

The sets cannot be downloaded from a stable public address, so each builder
prepares from a folder you have (TFDS's "manual dir"). Images are stored
losslessly as PNG in array_record files, with their file name, and read back by
``tfds.data_source`` (random access, no TensorFlow). Pixels read through
``tfds:NAME`` are identical to those read through ``folder:PATH``.
Data goes to ``--data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Optional, Sequence

import numpy as np

from nedenoise_jax.data.errors import DataError
from nedenoise_jax.io.images import list_images, read_float_image, to_channels

# name: (channels, split, folder under a --data_root, description)
STANDARD = {
    "bsd400": (1, "train", "train/bsd400", "BSD400: 400 gray 180x180 crops of BSD (DnCNN's training set)"),
    "cbsd432": (3, "train", "train/cbsd432", "CBSD432: the 432 colour BSD images (colour training set)"),
    "set12": (1, "test", "test/set12", "Set12: 12 gray test images (256x256 and 512x512)"),
    "bsd68": (1, "test", "test/bsd68", "BSD68: 68 gray BSD test images"),
    "cbsd68": (3, "test", "test/cbsd68", "CBSD68: the colour versions of BSD68"),
    "kodak24": (3, "test", "test/kodak24", "Kodak24: 24 colour photographs (768x512)"),
}

_BUILDERS: dict = {}


def _make_builder(name: str, channels: int, split: str, description: str):
  import tensorflow_datasets as tfds
  from etils import epath

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, channels), dtype=np.uint8),
            "name": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    path = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(path)}

  def _generate_examples(self, path):
    from PIL import Image

    import warnings

    rounded = []
    for f in list_images(path):
      img = to_channels(read_float_image(f), channels)
      q = np.rint(img * 255.0)
      if np.any(np.abs(q - img * 255.0) > 1e-3):  # 16-bit, float, or colour averaged to gray
        rounded.append(os.path.relpath(f, path))
      buf = io.BytesIO()
      a = q.astype(np.uint8)
      Image.fromarray(a[:, :, 0] if channels == 1 else a).save(buf, format="PNG")
      rel = os.path.relpath(f, path)
      yield rel, {"image": buf.getvalue(), "name": rel}
    if rounded:
      warnings.warn(f"{name}: {len(rounded)} image(s) were not 8-bit {channels}-channel images and "
                    f"were rounded to 8 bits (they differ from folder:{path} by up to 1/510): "
                    + ", ".join(rounded[:10]) + (" ..." if len(rounded) > 10 else ""), stacklevel=2)

  cls = type(name.capitalize(), (tfds.core.GeneratorBasedBuilder,), {
      "name": name,
      "VERSION": tfds.core.Version("1.0.0"),
      "RELEASE_NOTES": {"1.0.0": "First release."},
      "MANUAL_DOWNLOAD_INSTRUCTIONS": (
          f"Put the {description} image files in a folder (any depth; PNG, JPEG, BMP or TIFF) and "
          f"pass it as the manual dir: python -m nedenoise_jax.tfds_datasets {name} --manual_dir PATH"),
      "_info": _info,
      "_split_generators": _split_generators,
      "_generate_examples": _generate_examples,
      "__module__": __name__,
      # TFDS infers this from the module through importlib_resources, which is
      # not installed with it on every Python; the builders live in this file.
      "code_path": epath.Path(os.path.abspath(__file__)),
  })
  return cls


def register() -> dict:
  """Registers the builders with TFDS (once); returns ``{name: builder class}``."""
  if not _BUILDERS:
    import tensorflow_datasets as tfds

    for name, (channels, split, _, description) in STANDARD.items():
      try:
        _BUILDERS[name] = _make_builder(name, channels, split, description)
      except ValueError:  # already registered (module reloaded)
        _BUILDERS[name] = tfds.builder_cls(name)
  return _BUILDERS


def data_dir(explicit: Optional[str] = None) -> Optional[str]:
  return explicit or os.environ.get("TFDS_DATA_DIR") or None


def prepare(name: str, manual_dir: str, data_dir_: Optional[str] = None) -> str:
  """Prepares ``name`` from ``manual_dir`` (array_record files); returns the data folder."""
  import tensorflow_datasets as tfds

  builders = register()
  if name not in builders:
    raise DataError(f"no builder {name!r}; this module builds {', '.join(STANDARD)}")
  if not os.path.isdir(manual_dir):
    raise DataError(f"--manual_dir {manual_dir!r} is not a folder")
  builder = builders[name](data_dir=data_dir(data_dir_), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir)))
  return os.fspath(builder.data_dir)


def read(spec: str, channels: int) -> tuple[list[np.ndarray], list[str]]:
  """All images of ``tfds:NAME[:SPLIT]`` as float32 ``(H, W, channels)`` arrays, with names.

  Works for any prepared TFDS dataset with an image feature, stored as
  array_record (read by ``tfds.data_source``, without TensorFlow).
  """
  import tensorflow_datasets as tfds

  name, _, split = spec.partition(":")
  register()
  ddir = data_dir()
  try:
    builder = tfds.builder(name, data_dir=ddir)
  except Exception as e:  # DatasetNotFoundError and friends
    raise DataError(f"tfds:{spec}: unknown TFDS dataset {name!r} ({type(e).__name__})") from None
  if not builder.is_prepared():
    hint = (f"python -m nedenoise_jax.tfds_datasets {name} --manual_dir PATH" if name in STANDARD
            else f"tfds build {name} --file_format=array_record")
    raise DataError(f"tfds:{spec} is not prepared in {builder.data_dir}; prepare it with: {hint}")
  splits = list(builder.info.splits)
  if not split:
    split = "train" if "train" in splits else splits[0]
  elif split not in splits:
    raise DataError(f"tfds:{spec}: no split {split!r}; the dataset has {', '.join(splits)}")
  keys = [k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]
  if not keys:
    raise DataError(f"tfds:{spec}: the dataset has no image feature "
                         f"(features: {', '.join(builder.info.features)})")
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:
    raise DataError(f"tfds:{spec}: cannot open it for random access ({type(e).__name__}: {e}); "
                         "prepare it with file_format=array_record") from None
  images, names = [], []
  for i in range(len(source)):
    ex = source[i]
    img = np.asarray(ex[keys[0]])
    if img.ndim == 2:
      img = img[:, :, None]
    if np.issubdtype(img.dtype, np.integer):
      img = img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max)
    img = img.astype(np.float32)
    nm = ex.get("name", f"{name}/{split}/{i}")
    names.append(nm.decode() if isinstance(nm, bytes) else str(nm))
    images.append(to_channels(img, channels) if img.shape[-1] != channels else img)
  if not images:
    raise DataError(f"tfds:{spec} holds no images")
  order = np.argsort(names, kind="stable")  # the folder order, for the standard sets
  return [images[i] for i in order], [names[i] for i in order]


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse

  p = argparse.ArgumentParser(prog="python -m nedenoise_jax.tfds_datasets",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("names", nargs="+", help=f"one or more of {', '.join(STANDARD)}")
  p.add_argument("--manual_dir", default=None, help="the folder of images of the one dataset named")
  p.add_argument("--data_root", default=None,
                 help="a folder holding train/NAME and test/NAME image folders (for several names)")
  p.add_argument("--data_dir", default=None, help="TFDS data folder (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  args = p.parse_args(argv)
  if args.manual_dir and len(args.names) > 1:
    print("error: --manual_dir names one folder; prepare one dataset at a time with it", file=sys.stderr)
    return 2
  if not args.manual_dir and not args.data_root:
    print("error: give --manual_dir (one dataset) or --data_root (train/NAME, test/NAME under it)",
          file=sys.stderr)
    return 2
  for name in args.names:
    manual = args.manual_dir or (os.path.join(args.data_root, STANDARD[name][2])
                                 if name in STANDARD else None)
    try:
      if manual is None:
        raise DataError(f"no builder {name!r}; this module builds {', '.join(STANDARD)}")
      out = prepare(name, manual, args.data_dir)
    except DataError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"{name}: prepared from {manual} in {out}; use it as tfds:{name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
