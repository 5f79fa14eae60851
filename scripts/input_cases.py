"""Every bad-input case of the robustness issue, run as a user runs it, with what happens.

    python scripts/input_cases.py [--out docs/results/input_cases]

Each case runs the real command in a subprocess (``python -m nedenoise_jax.denoise``,
``python train.py``, ``python -m nedenoise_jax.evaluate``), or the API in this process where
the case is an API call, on inputs made in a temporary folder. For each case it records the
exit status, the error line the user reads, and what was checked of the files left behind
(an input never changed, nothing written outside ``--out``, a stack's structure kept and
each plane equal to that plane denoised alone). The peak memory of refusing the 30000 x
30000 TIFF is measured in a fresh process (its maximum resident set, against the same
process importing the package and reading a small image).

Writes OUT.md (a table) and OUT.json. The tests (tests/test_robustness.py,
tests/test_stacks.py, tests/test_train.py) assert the same cases; this script reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
ENV = {**os.environ, "PYTHONPATH": ROOT}


def run(*args):
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=ENV,
                        cwd=ROOT)


def denoise_cmd(*args):
  return run("-m", "nedenoise_jax.denoise", *args)


def error_lines(r):
  """What the user is told went wrong: each ``error: ...`` line with the lines that continue it
  (progress bars left out); for a failure without one, the last stderr line."""
  lines, current = [], None
  for ln in r.stderr.splitlines():
    if "%|" in ln or not ln.strip():
      continue
    if ln.startswith("error:") or "error: " in ln.split("|")[-1][:12]:
      current = ln.strip()
      lines.append(current)
    elif current is not None and (ln.startswith(" ") or lines):
      lines[-1] += " " + ln.strip()
  if not lines and r.returncode not in (0,) and r.stderr.strip():
    lines = [r.stderr.strip().splitlines()[-1]]
  return lines


def summary(r):
  out = [ln for ln in r.stdout.splitlines() if ln.startswith("denoised ")]
  return out[-1] if out else ""


class Report:
  def __init__(self):
    self.rows = []

  tmp = None

  def add(self, case, command, status, message, checks, ok):
    if self.tmp:
      message, checks = (str(x).replace(self.tmp + os.sep, "").replace(self.tmp, ".") for x in (message, checks))
    self.rows.append(dict(case=case, command=command, status=status, message=message, checks=checks,
                          ok=bool(ok)))
    mark = "ok  " if ok else "FAIL"
    print(f"[{mark}] {case}: exit {status}; {message}; {checks}", flush=True)

  def cli(self, case, command, r, want_status, checks="", ok=True):
    lines = error_lines(r)
    msg = " / ".join(lines) if lines else summary(r)
    if lines and summary(r):
      msg += f" ({summary(r)})"
    ok = ok and r.returncode == want_status and "Traceback" not in r.stderr
    self.add(case, command, r.returncode, msg, checks, ok)


def make_inputs(d):
  import tifffile
  from PIL import Image

  rng = np.random.default_rng(0)
  paths = {}
  gray = rng.integers(0, 256, (40, 48), dtype=np.uint8)
  paths["gray"] = os.path.join(d, "g.png")
  Image.fromarray(gray).save(paths["gray"])
  for k in (3, 4, 5):
    p = os.path.join(d, f"z{k}.tif")
    tifffile.imwrite(p, rng.integers(0, 4096, (k, 40, 48), dtype=np.uint16), imagej=True,
                     resolution=(4.0, 4.0), metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    paths[f"z{k}"] = p
  p = os.path.join(d, "ome.tif")
  tifffile.imwrite(p, rng.integers(0, 65536, (2, 2, 40, 48), dtype=np.uint16), ome=True,
                   metadata={"axes": "TZYX", "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm"})
  paths["ome"] = p
  p = os.path.join(d, "pages.tif")
  with tifffile.TiffWriter(p) as w:
    for plane in rng.integers(0, 256, (4, 40, 48), dtype=np.uint8):
      w.write(plane, metadata=None, contiguous=False)
  paths["pages"] = p
  odd = os.path.join(d, "odd")
  os.mkdir(odd)
  for name in ("..png", ".png"):
    Image.fromarray(gray).save(os.path.join(odd, name), format="PNG")
  paths["odd"] = odd
  bad = os.path.join(d, "bad")
  os.mkdir(bad)
  Image.fromarray(gray).save(os.path.join(bad, "a.png"))
  with open(os.path.join(bad, "corrupt.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
  tifffile.imwrite(os.path.join(bad, "full.tif"), gray)
  with open(os.path.join(bad, "full.tif"), "rb") as f:
    head = f.read(60)
  with open(os.path.join(bad, "cut.tif"), "wb") as f:
    f.write(head)
  os.remove(os.path.join(bad, "full.tif"))
  tifffile.imwrite(os.path.join(bad, "nan.tif"), np.full((16, 16), np.nan, np.float32))
  tifffile.imwrite(os.path.join(bad, "complex.tif"), np.ones((16, 16), np.complex64))
  paths["bad"] = bad
  # A 1 MB tiled TIFF claiming 30000 x 30000 pixels (0.9 GB decoded).
  p = os.path.join(d, "bomb.tif")
  tile = np.zeros((512, 512), np.uint8)
  tifffile.imwrite(p, (tile for _ in range((-(-30000 // 512)) ** 2)), shape=(30000, 30000),
                   dtype=np.uint8, tile=(512, 512), compression="zlib")
  paths["bomb"] = p
  # A PNG whose header claims 30000 x 30000 pixels.
  import struct
  import zlib

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  p = os.path.join(d, "bomb.png")
  with open(p, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
  paths["png_bomb"] = p
  return paths


def tiny_weights(d, blind):
  import jax.numpy as jnp

  import nedenoise_jax as nj
  from nedenoise_jax import models

  module = models.create("fdncnn", mode="norm_equiv", blind=blind, channels=1, depth=3, features=8)
  variables = nj.equivariance.random_variables(module, jnp.zeros((1, 16, 16, 1)),
                                               None if blind else jnp.zeros((1,)))
  return nj.save_weights(os.path.join(d, f"tiny-{'blind' if blind else 'nonblind'}.nedenoise"),
                         module, variables)


def peak_rss_mb(code):
  """Maximum resident set (MB) of a fresh process running ``code``."""
  wrapped = code + "\nimport resource; print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
  r = run("-c", wrapped)
  line = [ln for ln in r.stdout.splitlines() if ln.startswith("RSS ")]
  return (int(line[0].split()[1]) / 1024 if line else float("nan")), r


def stacks(rep, d, paths):
  import nedenoise_jax as nj
  from nedenoise_jax.io import images

  out = os.path.join(d, "out-stacks")
  names = ["z3", "z4", "z5", "ome", "pages"]
  r = denoise_cmd(*[paths[n] for n in names], "--out", out)
  for n in names:
    src, dst = paths[n], os.path.join(out, os.path.basename(paths[n]))
    got, want = images.read_stack(dst), images.read_stack(src)
    planes = want.data.reshape(-1, *want.data.shape[-2:])
    alone = max(float(np.max(np.abs(got.data.reshape(planes.shape)[i].astype(np.float64)
                                    - nj.denoise(p).astype(np.float64))))
                for i, p in enumerate(planes))
    same = (got.axes == want.axes and got.data.shape == want.data.shape
            and got.data.dtype == want.data.dtype and got.metadata == want.metadata)
    checks = (f"{want.data.shape} {want.data.dtype} {want.axes} -> {got.data.shape} "
              f"{got.data.dtype} {got.axes}, metadata {'kept' if got.metadata == want.metadata else 'CHANGED'}, "
              f"max |plane - plane alone| = {alone:g}")
    rep.add(f"stack {os.path.basename(src)}", f"denoise {' '.join(os.path.basename(paths[m]) for m in names)}",
            r.returncode, summary(r), checks, r.returncode == 0 and same and alone == 0)


def flags(rep, d, paths, nonblind):
  cases = [
      ("--sigma nan, non-blind model", ["--sigma", "nan", "--model", nonblind]),
      ("--sigma -1, non-blind model", ["--sigma", "-1", "--model", nonblind]),
      ("--sigma inf", ["--sigma", "inf", "--model", nonblind]),
      ("--tile 0", ["--tile", "0"]), ("--tile -8", ["--tile", "-8"]), ("--tile 3", ["--tile", "3"]),
      ("--overlap -8", ["--overlap", "-8"]),
      ("--model that does not exist", ["--model", "no/such.nedenoise"]),
  ]
  for case, extra in cases:
    out = os.path.join(d, "out-flags")
    r = denoise_cmd(paths["gray"], "--out", out, *extra)
    nothing = not os.path.exists(out) or not os.listdir(out)
    rep.cli(case, "denoise g.png --out out-flags " + " ".join(os.path.basename(e) if "/" in e else e
                                                            for e in extra),
            r, 2, "nothing written" if nothing else "SOMETHING WRITTEN", ok=nothing)


def outputs(rep, d, paths):
  afile = os.path.join(d, "afile")
  with open(afile, "w") as f:
    f.write("keep me")
  locked = os.path.join(d, "locked")
  os.mkdir(locked, 0o500)
  cases = [
      ("--out an existing regular file", [paths["gray"], "--out", afile], 2),
      ("--out through a regular file", [paths["gray"], "--out", os.path.join(afile, "sub")], 2),
      ("--out through missing folders (created)", [paths["gray"], "--out", os.path.join(d, "new", "a", "b")], 0),
      ("nonexistent input", [os.path.join(d, "missing.png"), "--out", os.path.join(d, "o1")], 2),
      ("nonexistent input beside a good one", [paths["gray"], os.path.join(d, "missing.png"), "--out",
                                               os.path.join(d, "o2")], 2),
  ]
  if os.geteuid() != 0:
    cases.append(("--out an unwritable folder", [paths["gray"], "--out", locked], 2))
  elif os.path.isdir("/sys/kernel"):  # root writes anywhere but in sysfs
    cases.append(("--out an unwritable folder (/sys/kernel, as root)", [paths["gray"], "--out", "/sys/kernel"], 2))
  for case, args, want in cases:
    r = denoise_cmd(*args)
    kept = open(afile).read() == "keep me"
    shown = " ".join(os.path.relpath(str(a), d) if str(a).startswith(d) else str(a) for a in args)
    rep.cli(case, "denoise " + shown, r, want, "afile unchanged" if kept else "AFILE CHANGED", ok=kept)
  r = run("-m", "nedenoise_jax.evaluate", "--model", "pretrained:gray-norm_equiv", "--data",
          "builtin:deadleaves-val", "--sigmas", "25", "--out", afile, "--no_progress")
  rep.cli("evaluate --out an existing regular file", "evaluate ... --out afile", r, 2,
          "refused before evaluating; afile unchanged" if open(afile).read() == "keep me" else "AFILE CHANGED")
  # Existing output without --force, and an output that is the input.
  out = os.path.join(d, "out-exist")
  os.mkdir(out)
  with open(os.path.join(out, "g.png"), "wb") as f:
    f.write(b"older result")
  r = denoise_cmd(paths["gray"], "--out", out)
  kept = open(os.path.join(out, "g.png"), "rb").read() == b"older result"
  rep.cli("an existing output, no --force", "denoise g.png --out out-exist", r, 2,
          "old output kept" if kept else "OLD OUTPUT LOST", ok=kept)
  before = open(paths["gray"], "rb").read()
  r = denoise_cmd(paths["gray"], "--out", d, "--force")
  kept = open(paths["gray"], "rb").read() == before
  rep.cli("--out the input's own folder, --force", "denoise g.png --out . --force", r, 2,
          "input unchanged" if kept else "INPUT CHANGED", ok=kept)


def per_file(rep, d, paths):
  bad = paths["bad"]
  out = os.path.join(d, "out-bad")
  os.makedirs(os.path.join(out, "dir.png"))  # an output that cannot be written: a folder is there
  import shutil

  shutil.copy(os.path.join(bad, "a.png"), os.path.join(bad, "dir.png"))
  r = denoise_cmd(bad, "--out", out, "--force")
  left = sorted(os.listdir(out))
  rep.cli("a folder of bad files (corrupt, truncated, NaN, complex, unwritable output) and good ones",
          "denoise bad/ --out out-bad --force", r, 1, f"written: {', '.join(left)}; no temporary left: "
          f"{not [n for n in left if n.startswith('.tmp-')]}", ok=left == ["a.png", "dir.png"])
  odd = [os.path.join(paths["odd"], n) for n in ("..png", ".png")]
  r = denoise_cmd(*odd, "--out", os.path.join(d, "out-odd"))
  left = sorted(os.listdir(os.path.join(d, "out-odd")))
  rep.cli("inputs named ..png and .png", "denoise odd/..png odd/.png --out out-odd", r, 0,
          f"written: {', '.join(left)}", ok=left == ["..png", ".png"])
  r = denoise_cmd(paths["odd"], "--out", os.path.join(d, "out-odd2"))
  rep.cli("a folder holding only hidden images (.png, ..png)", "denoise odd/ --out out-odd2", r, 2)
  rss_small, _ = peak_rss_mb("from nedenoise_jax.io import images; images.read_image(%r)" % paths["gray"])
  rss_bomb, rb = peak_rss_mb(
      "from nedenoise_jax.io import images\ntry:\n  images.read_image(%r)\nexcept images.ImageError as e:\n"
      "  print('refused:', e)" % paths["bomb"])
  r = denoise_cmd(paths["gray"], paths["bomb"], "--out", os.path.join(d, "out-bomb"))
  rep.cli("TIFF claiming 30000 x 30000 pixels (%.1f MB file)" % (os.path.getsize(paths["bomb"]) / 1e6),
          "denoise g.png bomb.tif --out out-bomb", r, 1,
          f"peak RSS refusing it {rss_bomb:.0f} MB vs {rss_small:.0f} MB reading a 40x48 PNG "
          f"(decoded it would be 900 MB)", ok="refused:" in rb.stdout and rss_bomb < rss_small + 50)
  r = denoise_cmd(paths["png_bomb"], "--out", os.path.join(d, "out-pngbomb"))
  rep.cli("PNG claiming 30000 x 30000 pixels", "denoise bomb.png --out out-pngbomb", r, 1)
  r = denoise_cmd(paths["gray"], "--out", os.path.join(d, "out-max"), "--max_pixels", "100")
  rep.cli("--max_pixels 100 on a 40x48 image", "denoise g.png --out out-max --max_pixels 100", r, 1)


def api(rep, d, paths):
  import nedenoise_jax as nj
  from nedenoise_jax import files
  from nedenoise_jax.io import images

  import importlib

  dn = importlib.import_module("nedenoise_jax.denoise")
  for case, arr in (("complex array to denoise()", np.ones((16, 16), np.complex64)),
                    ("object array to denoise()", np.ones((16, 16), object))):
    try:
      nj.denoise(arr)
      rep.add(case, "nj.denoise(arr)", "returned", "no error", "", False)
    except images.ImageError as e:
      rep.add(case, "nj.denoise(arr)", "ImageError", str(e), "", True)
  try:
    dn.denoise_stack(np.zeros((3, 16, 16), np.float32), "ZY")
    rep.add("a 3-D stack given axes='ZY'", "nj.denoise_stack(arr, 'ZY')", "returned", "no error", "", False)
  except images.ImageError as e:
    rep.add("a 3-D stack given axes='ZY'", "nj.denoise_stack(arr, 'ZY')", "ImageError", str(e), "", True)
  # The planted symlink: make the writer draw a name where a link already points outside --out.
  out, outside = os.path.join(d, "out-link"), os.path.join(d, "outside")
  os.mkdir(out)
  os.mkdir(outside)
  tokens = iter(["planted", "planted", "fresh"])
  real = files.secrets.token_hex
  files.secrets.token_hex = lambda n: next(tokens)
  try:
    victim = os.path.join(outside, "victim.png")
    os.symlink(victim, os.path.join(out, ".tmp-planted-g.png"))
    status = dn.main([paths["gray"], "--out", out])
  finally:
    files.secrets.token_hex = real
  clean = not os.path.exists(victim) and os.listdir(outside) == []
  rep.add("a symlink planted under the writer's temporary name", "denoise g.png --out out-link "
          "(in-process, the random name forced to collide)", status, "written to out-link/g.png",
          "nothing created outside --out" if clean else "WRITTEN OUTSIDE --out", status == 0 and clean)


def train_cases(rep, d):
  def cmd(wd, *extra):
    return ["train.py", "--config", "configs/quickstart.py", "--workdir", wd,
            "--config.model.features=4", "--config.model.depth=3", "--config.train.batch_size=4",
            "--config.train.patch_size=16", "--config.data.train=builtin:deadleaves:4",
            "--config.data.val=", "--config.train.schedule=constant", "--config.checkpoint.every_steps=2",
            "--cpu_devices=1", *extra]
  wd = os.path.join(d, "w-neg")
  r = run(*cmd(wd, "--config.train.steps=-5"))
  rep.cli("train.steps=-5", "train.py ... --config.train.steps=-5", r, 2,
          "no workdir left" if not os.path.exists(wd) else "WORKDIR LEFT", ok=not os.path.exists(wd))
  r = run(*cmd(os.path.join(d, "w-b"), "--config.train.steps=2", "--config.train.batch_size=0"))
  rep.cli("train.batch_size=0", "train.py ... --config.train.batch_size=0", r, 2)
  afile = os.path.join(d, "afile-w")
  with open(afile, "w") as f:
    f.write("not a folder")
  r = run(*cmd(afile, "--config.train.steps=2"))
  rep.cli("workdir a regular file", "train.py ... --workdir afile-w", r, 2,
          "file unchanged" if open(afile).read() == "not a folder" else "FILE CHANGED")
  wd = os.path.join(d, "w")
  r = run(*cmd(wd, "--config.train.steps=4"))
  saved = open(os.path.join(wd, "config.json")).read()
  r = run(*cmd(wd, "--config.train.steps=4", "--config.train.learning_rate=0.002"))
  kept = open(os.path.join(wd, "config.json")).read() == saved
  rep.cli("resume with another learning rate", "train.py ... (same workdir) --config.train.learning_rate=0.002",
          r, 2, "config.json unchanged" if kept else "CONFIG.JSON REWRITTEN", ok=kept)
  r = run(*cmd(wd, "--config.train.steps=4", "--config.model.depth=4"))
  kept = open(os.path.join(wd, "config.json")).read() == saved
  rep.cli("resume with another model (depth 4)", "train.py ... (same workdir) --config.model.depth=4", r, 2,
          "config.json unchanged" if kept else "CONFIG.JSON REWRITTEN", ok=kept)
  train_recovery_cases(rep, d, cmd)


def planar_rgb(rep, d):
  """A planar RGB TIFF (its metadata says RGB) is a colour image; three gray pages are a stack."""
  import tifffile

  from nedenoise_jax.io import images

  rng = np.random.default_rng(7)
  data = rng.integers(0, 256, (3, 40, 48), dtype=np.uint8)
  rgb, gray3 = os.path.join(d, "planar-rgb.tif"), os.path.join(d, "three-pages.tif")
  tifffile.imwrite(rgb, data, photometric="rgb", planarconfig="separate")
  tifffile.imwrite(gray3, data, photometric="minisblack")
  out = os.path.join(d, "out-planar")
  r = denoise_cmd(rgb, gray3, "--out", out)
  a, b = images.read_stack(os.path.join(out, "planar-rgb.tif")), images.read_stack(os.path.join(out, "three-pages.tif"))
  with tifffile.TiffFile(os.path.join(out, "planar-rgb.tif")) as t:
    photometric = t.pages[0].photometric.name
  checks = (f"planar-rgb.tif -> {a.data.shape} {a.axes} {photometric} (the colour model; written interleaved); "
            f"three-pages.tif -> {b.data.shape} {b.axes} (a stack of 3 gray planes)")
  rep.cli("planar RGB TIFF and a 3-page gray TIFF", "denoise planar-rgb.tif three-pages.tif", r, 0, checks,
          ok=a.data.shape == (40, 48, 3) and photometric == "RGB" and b.planes == 3 and b.data.shape == (3, 40, 48))


def train_recovery_cases(rep, d, cmd):
  """SIGKILL at a checkpoint, then the same command: the run it gives is the uninterrupted run's;
  a finished run run again logs nothing twice; a size that builds no network is refused."""
  import signal

  import jax

  import nedenoise_jax as nj

  ref, killed = os.path.join(d, "w-ref"), os.path.join(d, "w-killed")
  steps = "--config.train.steps=40"
  run(*cmd(ref, steps))
  proc = subprocess.Popen([sys.executable, *cmd(killed, steps)], env=ENV, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts, deadline = os.path.join(killed, "checkpoints"), time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  at = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) if os.path.isdir(ckpts) else []
  r = run(*cmd(killed, steps))
  same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(nj.load(ref)[1]),
                                                  jax.tree.leaves(nj.load(killed)[1])))
  rep.cli("SIGKILL during training, then the same command", f"kill -9 at checkpoint {at[-1] if at else '?'} "
          "of 40 steps; train.py ... (same workdir)", r, 0,
          f"killed with checkpoints {at}; final weights {'equal' if same else 'DIFFERENT'} to the uninterrupted run's",
          ok=same and bool(at) and at[-1] < 40)
  rows = open(os.path.join(ref, "metrics.jsonl")).read()
  r = run(*cmd(ref, steps))
  again = open(os.path.join(ref, "metrics.jsonl")).read() == rows
  rep.cli("a finished run, run again", "train.py ... (the finished workdir)", r, 0,
          "metrics.jsonl unchanged, no step logged twice" if again else "METRICS CHANGED", ok=again)
  wd = os.path.join(d, "w-depth0")
  r = run(*cmd(wd, "--config.train.steps=2", "--config.model.depth=0"))
  rep.cli("model.depth=0", "train.py ... --config.model.depth=0", r, 2,
          "no workdir left" if not os.path.exists(wd) else "WORKDIR LEFT", ok=not os.path.exists(wd))


def denoise_only_install(rep, d):
  """`pip install .` without the train extra: denoise and evaluate work, the others name the extra."""
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  from without_extras import nedenoise as run_without_extras

  def nedenoise(*args):
    return run_without_extras(*args, cwd=d, env=ENV)

  r = nedenoise("evaluate", "--model", "pretrained:gray-norm_equiv", "--data", "builtin:deadleaves-val:1",
                "--sigmas", "25", "--out", "ev-base", "--no_progress")
  notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]
  written = sorted(os.listdir(os.path.join(d, "ev-base"))) if os.path.isdir(os.path.join(d, "ev-base")) else []
  rep.add("evaluate on a denoise-only install", "nedenoise evaluate ... (no matplotlib)", r.returncode,
          " / ".join(notes), f"written: {', '.join(written)}",
          r.returncode == 0 and written == ["results.csv", "results.json", "results.md"])
  r = nedenoise("train", "--config", "quickstart", "--workdir", "w-base")
  rep.cli("train on a denoise-only install", "nedenoise train --config quickstart ...", r, 2,
          "no workdir left" if not os.path.exists(os.path.join(d, "w-base")) else "WORKDIR LEFT",
          ok=not os.path.exists(os.path.join(d, "w-base")))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "input_cases"))
  args = p.parse_args()
  from nedenoise_jax import files

  rep = Report()
  t0 = time.time()
  with tempfile.TemporaryDirectory() as d:
    rep.tmp = os.path.realpath(d)
    d = rep.tmp
    paths = make_inputs(d)
    nonblind = tiny_weights(d, blind=False)
    stacks(rep, d, paths)
    planar_rgb(rep, d)
    flags(rep, d, paths, nonblind)
    outputs(rep, d, paths)
    per_file(rep, d, paths)
    api(rep, d, paths)
    train_cases(rep, d)
    denoise_only_install(rep, d)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()
  from bench import cpu_model

  meta = dict(commit=commit, machine=f"{cpu_model()}, {os.cpu_count()} cores",
              seconds=round(time.time() - t0, 1), all_ok=all(r["ok"] for r in rep.rows))
  files.write_text(args.out + ".json", json.dumps(dict(meta=meta, cases=rep.rows), indent=1) + "\n")
  esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
  lines = [f"# Bad input: every case, what the user gets (commit {commit})", "",
           f"`python scripts/input_cases.py`, {time.strftime('%Y-%m-%d')}, {meta['machine']}, {meta['seconds']} s. "
           "Exit status: "
           "0 every image written, 1 some skipped (each named), 2 a usage error found before any work.",
           "", "| case | exit | message | checked |", "|---|---|---|---|"]
  lines += [f"| {esc(r['case'])} | {r['status']} | {esc(r['message'])} | {esc(r['checks'])}"
            f"{'' if r['ok'] else ' **(not as intended)**'} |" for r in rep.rows]
  files.write_text(args.out + ".md", "\n".join(lines) + "\n")
  print(f"{len(rep.rows)} cases, {'all as intended' if meta['all_ok'] else 'SOME NOT AS INTENDED'}; "
        f"{args.out}.md")
  return 0 if meta["all_ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
