"""Bad input gets a clear error and loses nothing: the commands' flags checked before any work
(exit status 2), per-file problems reported by name while the batch goes on (exit status 1),
pixel limits for every reader, non-real pixels, and the one atomic writer."""

import importlib
import os
import re
import subprocess
import sys
import tracemalloc

import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image

import nedenoise_jax as nj
from nedenoise_jax import files, models
from nedenoise_jax.io import images

from conftest import ROOT, TINY

dn = importlib.import_module("nedenoise_jax.denoise")
RNG = np.random.default_rng(0)
ENV = {**os.environ, "PYTHONPATH": ROOT}


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                        text=True, env=ENV)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  module = models.create("fdncnn", mode="norm_equiv", blind=True, channels=1, **TINY["fdncnn"])
  variables = nj.equivariance.random_variables(module, jnp.zeros((1, 16, 16, 1)))
  return nj.save_weights(str(tmp_path_factory.mktemp("w") / "tiny.nedenoise"), module, variables)


@pytest.fixture
def gray(tmp_path):
  path = tmp_path / "g.png"
  Image.fromarray(RNG.integers(0, 256, (20, 24), dtype=np.uint8)).save(path)
  return path


# --------------------------------------------------------------------------- the denoise command


@pytest.mark.parametrize("flags, message", [
    (["--sigma", "nan"], "--sigma nan: expected a finite noise level >= 0"),
    (["--sigma", "inf"], "--sigma inf: expected a finite noise level >= 0"),
    (["--sigma", "-1"], "--sigma -1.0: expected a finite noise level >= 0"),
    (["--tile", "0"], "--tile 0: expected a multiple of 8 from 8 to 16384"),
    (["--tile", "-8"], "--tile -8: expected a multiple of 8"),
    (["--tile", "3"], "--tile 3: expected a multiple of 8"),
    (["--tile", "1000000"], "--tile 1000000: expected a multiple of 8 from 8 to 16384"),
    (["--overlap", "-8"], "--overlap -8: expected pixels of context from 0"),
    (["--map_scale", "nan"], "--map_scale nan: expected a finite factor >= 0"),
    (["--max_pixels", "-1"], "--max_pixels -1: expected a number of pixels"),
    (["--sigma", "5", "--noise_map", "local"], "give --sigma .* or --noise_map .*, not both"),
    (["--model", "no/such.nedenoise"], "--model no/such.nedenoise: no weights file"),
])
def test_cli_bad_flags_are_usage_errors_before_work(tmp_path, gray, flags, message):
  out = tmp_path / "out"
  r = _run("nedenoise_jax.denoise", gray, "--out", out, *flags)
  assert r.returncode == 2, r.stderr
  assert re.search("error: " + message, r.stderr), r.stderr
  assert "Traceback" not in r.stderr and "img/s" not in r.stderr  # no image was started
  assert not out.exists() or not os.listdir(out)


def test_cli_bad_out_and_missing_input_are_usage_errors(tmp_path, gray):
  afile = tmp_path / "afile"
  afile.write_text("keep me")
  cases = [
      ([gray, "--out", afile], f"--out {afile}: is a file, not a folder"),
      ([gray, "--out", afile / "sub"], f"--out {afile / 'sub'}: cannot write there"),
      ([tmp_path / "missing.png", "--out", tmp_path / "o"], f"{tmp_path / 'missing.png'}: no such file or folder"),
      ([gray, tmp_path / "missing.png", "--out", tmp_path / "o"], f"{tmp_path / 'missing.png'}: no such file"),
  ]
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases.append(([gray, "--out", locked], f"--out {locked}: cannot write there"))
  elif os.path.isdir("/sys/kernel"):  # but not in sysfs
    cases.append(([gray, "--out", "/sys/kernel"], "--out /sys/kernel: cannot write there"))
  for args, message in cases:
    r = _run("nedenoise_jax.denoise", *args)
    assert r.returncode == 2 and f"error: {message}" in r.stderr, (args, r.stderr)
    assert "Traceback" not in r.stderr
  assert afile.read_text() == "keep me"
  assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


def test_cli_folder_of_hidden_images_says_they_were_skipped(tmp_path, weights):
  """A folder's hidden files are skipped (an unfinished write's temporaries are hidden); a
  folder holding nothing else says so and how to denoise them, and naming them works."""
  src = tmp_path / "in"
  src.mkdir()
  for name in (".a.png", "..png"):
    Image.fromarray(RNG.integers(0, 256, (20, 24), dtype=np.uint8)).save(src / name, format="PNG")
  r = _run("nedenoise_jax.denoise", src, "--out", tmp_path / "o", "--model", weights)
  assert r.returncode == 2, r.stderr
  assert (f"error: {src}: folder holds no .png/.jpg/.jpeg/.bmp/.tif/.tiff images (2 hidden image "
          "file(s), named '.*', skipped: name them to denoise them)") in r.stderr, r.stderr
  r = _run("nedenoise_jax.denoise", src / ".a.png", src / "..png", "--out", tmp_path / "o",
           "--model", weights)
  assert r.returncode == 0 and sorted(os.listdir(tmp_path / "o")) == ["..png", ".a.png"], r.stderr


def test_cli_per_file_problems_do_not_stop_the_batch(tmp_path, weights):
  src = tmp_path / "in"
  src.mkdir()
  for name in ("a.png", "..png", ".png", "b.tif"):
    img = RNG.integers(0, 256, (20, 24), dtype=np.uint8)
    (tifffile.imwrite(src / name, img) if name.endswith(".tif")
     else Image.fromarray(img).save(src / name, format="PNG"))
  (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
  (src / "cut.tif").write_bytes((src / "b.tif").read_bytes()[:60])
  tifffile.imwrite(src / "complex.tif", np.ones((8, 8), np.complex64))
  tifffile.imwrite(src / "nan.tif", np.full((8, 8), np.nan, np.float32))
  names = ["a.png", "..png", ".png", "corrupt.png", "b.tif", "cut.tif", "complex.tif", "nan.tif"]
  out = tmp_path / "out"
  (out / "b.tif").mkdir(parents=True)  # an output that cannot be written (a folder is there)
  r = _run("nedenoise_jax.denoise", *[src / n for n in names], "--out", out, "--model", weights,
           "--force")
  assert r.returncode == 1, r.stderr
  assert "denoised 3 of 8 image(s)" in r.stdout
  assert f"error: {src / 'nan.tif'}: contains NaN or Inf pixels" in r.stderr
  assert f"error: {src / 'corrupt.png'}: cannot read image" in r.stderr
  assert f"error: {src / 'cut.tif'}: cannot read" in r.stderr
  assert f"error: {src / 'complex.tif'}: unsupported pixel type complex64" in r.stderr
  assert f"error: {src / 'b.tif'}: cannot write {out / 'b.tif'}" in r.stderr
  assert "warnings.warn" not in r.stderr  # Pillow's "Corrupt EXIF data" on cut.tif is held back
  assert sorted(os.listdir(out)) == sorted(["a.png", "..png", ".png", "b.tif"])
  assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
  r = _run("nedenoise_jax.denoise", src / "a.png", src / "..png", "--out", tmp_path / "ok",
           "--model", weights)
  assert r.returncode == 0 and "denoised 2 of 2 image(s)" in r.stdout, r.stderr


def test_cli_existing_output_and_input_are_never_overwritten(tmp_path, gray, weights):
  out = tmp_path / "out"
  out.mkdir()
  (out / "g.png").write_bytes(b"older result")
  r = _run("nedenoise_jax.denoise", gray, "--out", out, "--model", weights)
  assert r.returncode == 2 and "exists; pass --force" in r.stderr
  assert (out / "g.png").read_bytes() == b"older result"
  before = gray.read_bytes()
  r = _run("nedenoise_jax.denoise", gray, "--out", tmp_path, "--model", weights, "--force")
  assert r.returncode == 2 and "would overwrite the input" in r.stderr
  assert gray.read_bytes() == before


def test_cli_planted_symlink_writes_nothing_outside_out(tmp_path, gray, weights, monkeypatch):
  """A symlink planted under the temporary name the writer draws is never followed: the writer
  draws another name, and the file the link points to is never created."""
  out, outside = tmp_path / "out", tmp_path / "outside"
  out.mkdir()
  outside.mkdir()
  tokens = iter(["planted", "planted", "fresh"])
  monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(tokens))
  victim = outside / "victim.png"
  os.symlink(victim, out / ".tmp-planted-g.png")
  assert dn.main([str(gray), "--out", str(out), "--model", weights]) == 0
  assert not victim.exists() and os.listdir(outside) == []
  assert os.path.islink(out / ".tmp-planted-g.png")  # not ours: left as it was
  assert images.read_image(str(out / "g.png")).shape == (20, 24)


# --------------------------------------------------------------------------- the atomic writer


def test_atomic_open_replaces_only_on_success(tmp_path):
  path = tmp_path / "r.json"
  files.write_text(path, "old")
  with pytest.raises(RuntimeError):
    with files.atomic_open(path, "w") as f:
      f.write("half")
      raise RuntimeError("crash while writing")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]
  with files.atomic_open(path, "w") as f:
    f.write("new")
  assert path.read_text() == "new"
  os.symlink(tmp_path / "elsewhere", tmp_path / "link.json")  # a symlink destination is replaced,
  files.write_text(tmp_path / "link.json", "x")                 # not followed
  assert not (tmp_path / "elsewhere").exists() and not os.path.islink(tmp_path / "link.json")


def test_atomic_open_fsyncs_and_refuses_a_swapped_temp(tmp_path, monkeypatch):
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
  files.write_bytes(tmp_path / "a.bin", b"data")
  assert len(synced) >= 1 and (tmp_path / "a.bin").read_bytes() == b"data"
  (tmp_path / "target").write_text("not yours")
  with pytest.raises(OSError, match="was replaced while being written"):
    with files.atomic_open(tmp_path / "b.bin") as f:
      f.write(b"data")
      os.unlink(f.name)  # another process swaps the temporary name for a link
      os.symlink(tmp_path / "target", f.name)
  assert not (tmp_path / "b.bin").exists() and (tmp_path / "target").read_text() == "not yours"


def test_writers_go_through_the_atomic_writer():
  """No module but files.py opens a file for writing or renames one (metrics.jsonl, an
  append-only log, is the one exception)."""
  pkg = os.path.join(ROOT, "nedenoise_jax")
  pattern = re.compile(r"(?<!\w)open\([^)]*['\"][wx]b?['\"]|os\.replace\(|os\.rename\(|mkstemp\("
                       r"|\.savefig\((?!f\b)|\.save\((?!f\b|buf\b)|imwrite\((?!f\b)")
  offenders = []
  for d, _, fs in os.walk(pkg):
    for name in fs:
      path = os.path.join(d, name)
      if not name.endswith(".py") or path == os.path.join(pkg, "files.py"):
        continue
      for i, line in enumerate(open(path, encoding="utf-8"), 1):
        code = line.split("#")[0]
        if pattern.search(code) and "mngr.save(" not in code and "checkpoints.save(" not in code:
          offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
  assert not offenders, "\n".join(offenders)


# --------------------------------------------------------------------------- pixel limits


@pytest.fixture(scope="module")
def tiff_bomb(tmp_path_factory):
  """A 1.3 MB tiled, deflated TIFF that claims 30000 x 30000 pixels (0.9 GB decoded)."""
  path = str(tmp_path_factory.mktemp("bomb") / "bomb.tif")
  tile = np.zeros((512, 512), np.uint8)
  count = (-(-30000 // 512)) ** 2
  tifffile.imwrite(path, (tile for _ in range(count)), shape=(30000, 30000), dtype=np.uint8,
                   tile=(512, 512), compression="zlib")
  return path


def _png_bomb(path, width, height):
  """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
  import struct
  import zlib

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("reader", [images.read_image, images.read_stack, images.read_float_image])
def test_tiff_bomb_refused_without_allocating(tiff_bomb, reader):
  assert os.path.getsize(tiff_bomb) < 2_000_000
  tracemalloc.start()
  try:
    with pytest.raises(images.ImageError, match=r"bomb.tif: claims 900,000,000 pixels \(30000 Y x "
                                                r"30000 X\), more than the limit of 178,956,970"):
      reader(tiff_bomb)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 20_000_000, f"{peak / 1e6:.0f} MB allocated to refuse it"


def test_png_bomb_and_configurable_limits(tmp_path, gray):
  bomb = str(tmp_path / "bomb.png")
  _png_bomb(bomb, 30000, 30000)
  with pytest.raises(images.ImageError, match="bomb.png: Image size .* exceeds limit"):
    images.read_image(bomb)
  with pytest.raises(images.ImageError, match=r"g.png: claims 480 pixels \(20 Y x 24 X\), more than "
                                              r"the limit of 100"):
    images.read_image(str(gray), max_pixels=100)
  assert images.read_image(str(gray), max_pixels=480).shape == (20, 24)
  # A limit above Pillow's own lets Pillow open what ours allows (the header is read; the
  # truncated data then fails to decode, which is a clear error too).
  with pytest.raises(images.ImageError, match="bomb.png: claims 900,000,000 pixels"):
    images.read_image(bomb, max_pixels=500_000_000)
  from PIL import Image as PILImage
  assert PILImage.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global is left as it was


def test_cli_max_pixels(tmp_path, gray, tiff_bomb, weights):
  r = _run("nedenoise_jax.denoise", gray, tiff_bomb, "--out", tmp_path / "o", "--model", weights)
  assert r.returncode == 1 and "denoised 1 of 2" in r.stdout
  assert f"error: {tiff_bomb}: claims 900,000,000 pixels" in r.stderr
  r = _run("nedenoise_jax.denoise", gray, "--out", tmp_path / "p", "--model", weights, "--max_pixels", 100)
  assert r.returncode == 1 and "claims 480 pixels" in r.stderr and "limit of 100" in r.stderr


# --------------------------------------------------------------------------- non-real pixels


@pytest.mark.parametrize("bad", [np.ones((8, 8), np.complex64), np.ones((8, 8), object),
                                 np.array([["a"] * 8] * 8)])
def test_non_real_arrays_are_clear_errors(bad):
  module = models.create("fdncnn", mode="norm_equiv", blind=True, channels=1, **TINY["fdncnn"])
  variables = nj.equivariance.random_variables(module, jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(images.ImageError, match=f"unsupported pixel type {bad.dtype}; expected real"):
    dn.denoise(bad, (module, variables))
  with pytest.raises(images.ImageError, match="unsupported pixel type"):
    dn.denoise_stack(bad[None], "ZYX", (module, variables))
  with pytest.raises(images.ImageError, match="unsupported pixel type"):
    images.write_image("/tmp/never-written.tif", bad)
  assert not os.path.exists("/tmp/never-written.tif")


@pytest.mark.parametrize("kw, message", [
    (dict(sigma=float("nan")), "sigma=nan: expected a finite noise level >= 0"),
    (dict(sigma=-5.0), "sigma=-5.0: expected a finite"),
    (dict(tile=3), "tile=3: expected a multiple of 8"),
    (dict(tile=0), "tile=0: expected a multiple of 8"),
    (dict(overlap=-8), "overlap=-8: expected pixels of context"),
    (dict(batch=0), "batch=0: expected a number of images >= 1"),
])
def test_denoise_api_checks_its_arguments(kw, message):
  module = models.create("fdncnn", mode="norm_equiv", blind=False, channels=1, **TINY["fdncnn"])
  variables = nj.equivariance.random_variables(module, jnp.zeros((1, 16, 16, 1)), jnp.zeros((1,)))
  with pytest.raises(images.ImageError, match=re.escape(message)):
    dn.denoise(np.zeros((16, 16), np.float32), (module, variables), **kw)


# --------------------------------------------------------------------------- evaluate, analyze


def test_evaluate_and_analyze_refuse_a_bad_out_before_work(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("keep me")
  for module, args in (("nedenoise_jax.evaluate", ["--data", "builtin:deadleaves-val", "--sigmas", "25"]),
                       ("nedenoise_jax.analyze", ["filters"])):
    r = _run(module, "--model", "pretrained:gray-norm_equiv", *args, "--out", afile)
    assert r.returncode == 2 and f"error: --out {afile}: is a file, not a folder" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
  assert afile.read_text() == "keep me"


def test_stack_limits_per_plane_and_in_total(tmp_path):
  path = str(tmp_path / "z.tif")
  tifffile.imwrite(path, np.zeros((6, 20, 24), np.uint16), imagej=True, metadata={"axes": "ZYX"})
  assert images.read_stack(path, max_pixels=480, max_stack_pixels=2880).planes == 6
  with pytest.raises(images.ImageError, match=r"z.tif: claims 480 pixels \(6 Z x 20 Y x 24 X\), more "
                                              r"than the limit of 479; not read. Pass a larger max_pixels"):
    images.read_stack(path, max_pixels=479)
  with pytest.raises(images.ImageError, match=r"claims 2,880 pixels over all planes .* limit of 2,879"
                                              r".*max_stack_pixels"):
    images.read_stack(path, max_stack_pixels=2879)
  with pytest.raises(images.ImageError, match=r"claims 2\*\*64|claims 18,446,744,073,709,551,616"):
    images._check_pixels("huge.tif", (2 ** 32, 2 ** 32), "YX", images.MAX_PIXELS)  # no int64 wrap


@pytest.mark.parametrize("shapes, match", [
    (((20, 24), (20, 24), (10, 12)), r"mixed.tif: holds 2 series of different shapes \(\(2, 20, 24\) IYX"),
    (((20, 24), (10, 12)), r"mixed.tif: a pyramid of 2 resolution levels \(\(20, 24\), \(10, 12\)\)"),
])
def test_several_series_or_levels_are_an_error_not_a_silent_first(tmp_path, shapes, match):
  """Pages of several sizes: reading the first series alone would drop the others."""
  path = str(tmp_path / "mixed.tif")
  with tifffile.TiffWriter(path) as w:
    for shape in shapes:
      w.write(np.zeros(shape, np.uint8), metadata=None)
  for read in (images.read_image, images.read_stack):
    with pytest.raises(images.ImageError, match=match):
      read(path)
  assert not images.is_stack(path)
  assert images.read_image(path, first_page=True).shape == (20, 24)


def test_pillow_limit_lifted_for_the_whole_read(tmp_path, monkeypatch):
  """A TIFF that only Pillow decodes (LZW without imagecodecs) checks Pillow's limit again when
  loading: ours decides for the whole read, and Pillow's global comes back."""
  from PIL import Image as PILImage

  path = str(tmp_path / "lzw.tif")
  PILImage.fromarray(RNG.integers(0, 256, (20, 24), dtype=np.uint8)).save(path, compression="tiff_lzw")
  monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
  assert images.read_image(path, max_pixels=None).shape == (20, 24)
  assert images.read_image(path, max_pixels=480).shape == (20, 24)
  assert PILImage.MAX_IMAGE_PIXELS == 100
