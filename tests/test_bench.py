"""The benchmark's statistics (benchmarks/bench.py); no timing here."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import bench  # noqa: E402


def test_paired_ratio_median_and_interval():
  base = [2.0] * 9
  times = [2.0 * r for r in (1.05, 0.99, 1.02, 1.10, 1.01, 1.03, 1.04, 0.98, 1.20)]
  pr = bench.paired_ratio(times, base)
  ordered = sorted(t / 2.0 for t in times)
  assert pr["median"] == pytest.approx(ordered[4])
  # n = 9: P(B <= 1) = 10/512 <= 0.025 < P(B <= 2), so the 2nd and 8th order statistics.
  assert pr["ci95"] == pytest.approx([ordered[1], ordered[7]])


def test_paired_ratio_cancels_a_drift_the_medians_keep():
  # The machine slows down over the run; the mode is 4% slower in every round.
  base = [1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5]
  times = [1.04 * b for b in base]
  pr = bench.paired_ratio(times, base)
  assert pr["median"] == pytest.approx(1.04)
  assert pr["ci95"] == pytest.approx([1.04, 1.04])


def test_paired_ratio_has_no_interval_below_six_rounds():
  assert bench.paired_ratio([1.0] * 5, [1.0] * 5)["ci95"] is None
  assert bench.paired_ratio([1.0] * 6, [1.0] * 6)["ci95"] is not None
  with pytest.raises(ValueError, match="at least one round"):
    bench.paired_ratio([], [])


def test_markdown_has_the_paired_column():
  row = dict(arch="drunet", task="train", median_s=1.0, gflops_per_s=1.0, compile_s=1.0)
  rows = [dict(row, mode="ordinary", times_s=[1.0] * 7),
          dict(row, mode="norm_equiv", median_s=1.03, times_s=[1.03] * 7)]
  md = bench.markdown({"rows": rows})
  assert "per round / ordinary" in md
  assert "| 1.030 | 1.030 (1.030–1.030) |" in md


def test_task_and_train_shape_specs():
  assert bench.parse_task("infer512") == (1, 512)
  assert bench.parse_task("infer8x256") == (8, 256)
  shapes = bench.parse_train_shapes("fdncnn=128x64,drunet=16x128")
  assert shapes == {"fdncnn": (128, 64), "drunet": (16, 128)}
  assert bench.parse_train_shapes("") == bench.TRAIN_SHAPES
  assert bench.parse_train_shapes("drunet=2x32")["fdncnn"] == bench.TRAIN_SHAPES["fdncnn"]


def test_mode_paths_and_a_failing_mode_keeps_the_others(tmp_path, monkeypatch):
  assert bench.parse_mode("norm_equiv@pallas") == ("norm_equiv", "pallas")
  assert bench.parse_mode("ordinary") == ("ordinary", None)
  with pytest.raises(ValueError, match="convolution path"):
    bench.parse_mode("norm_equiv@cudnn")
  from nedenoise_jax.kernels import pallas_conv  # bench imports the package lazily: the paths by hand
  assert bench.CONV_PATHS == pallas_conv.MODES
  monkeypatch.delenv("NEDENOISE_GPU_CONV", raising=False)
  with bench.conv_path("interpret"):
    assert os.environ["NEDENOISE_GPU_CONV"] == "interpret"
  assert "NEDENOISE_GPU_CONV" not in os.environ
  # one mode that cannot be built is recorded as failed; the others are timed and written
  out = tmp_path / "b"
  assert bench.main(["--archs", "fdncnn", "--modes", "ordinary,norm_equiv@cudnn,norm_equiv",
                     "--tasks", "infer2x16", "--tiny", "--repeats", "1", "--cpu_devices", "0",
                     "--out", str(out)]) == 0
  import json

  rows = json.load(open(f"{out}.json"))["rows"]
  assert [(r["mode"], "error" in r) for r in rows] == [
      ("norm_equiv@cudnn", True), ("ordinary", False), ("norm_equiv", False)]
  assert "failed" in open(f"{out}.md").read()


def test_repeat_times_warms_up_once_then_times_each_call():
  calls = []
  times = bench.repeat_times(lambda: calls.append(1), 4, block=lambda r: r)
  assert len(calls) == 5  # the compiling warm-up, then the four timed calls
  assert len(times) == 4 and all(t >= 0 for t in times)


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCRIPTS = sorted(os.path.join(d, f) for d in ("benchmarks", "scripts")
                 for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(".py"))


def test_every_benchmark_and_script_imports_as_it_is_run():
  # Each is run as `python benchmarks/X.py`, its own folder first on sys.path; a name one of
  # them imports from another (bench.cpu_model, ...) must still be there. One process for all.
  import subprocess

  code = ("import importlib, os, sys, traceback\nbad = []\n"
          "for rel in sys.argv[1:]:\n"
          "  d, name = os.path.split(rel)\n"
          "  sys.path.insert(0, os.path.abspath(d))\n"
          "  try:\n    importlib.import_module(name[:-3])\n"
          "  except Exception:\n    bad.append(rel + ': ' + traceback.format_exc(limit=1).splitlines()[-1])\n"
          "  sys.path.pop(0)\n"
          "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
  assert len(SCRIPTS) >= 10
  r = subprocess.run([sys.executable, "-c", code, *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stdout + r.stderr
