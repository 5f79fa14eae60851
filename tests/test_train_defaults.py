"""The shipped defaults' recipe and its GPU driver (scripts/train_defaults.py), on a tiny model.

A run the driver cut short, packed and resumed from its archive gives the weights of the
same run never interrupted, bit for bit: what the device runs rely on.
"""

import json
import os
import subprocess
import sys
import tarfile

import jax
import numpy as np

import nedenoise_jax
from nedenoise_jax.configs import defaults
from nedenoise_jax.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "scripts", "train_defaults.py")
TINY = ["model.depth=3", "model.features=4", "train.steps=6", "train.batch_size=8", "train.patch_size=16",
        "train.warmup_steps=1", "checkpoint.every_steps=3", "checkpoint.async_save=False",
        "data.train=builtin:deadleaves:4", "data.val=builtin:deadleaves-val:1",
        "noise.val_sigmas=(25.0,)"]


def test_defaults_config_is_valid_and_both_modes_share_the_recipe():
  ne = defaults.get_config("norm_equiv,root=/data")
  ordinary = defaults.get_config("ordinary,color,root=/data")
  for c in (ne, ordinary):
    config_lib.validate(c)
  assert (ne.model.mode, ordinary.model.mode) == ("norm_equiv", "ordinary")
  assert ne.data.train.endswith("train/bsd400") and ordinary.data.train.endswith("train/cbsd432")
  a, b = json.loads(ne.to_json()), json.loads(ordinary.to_json())
  for section in ("train", "noise", "checkpoint"):
    assert a[section] == b[section], section
  assert {k: v for k, v in a["model"].items() if k not in ("mode", "channels")} == {
      k: v for k, v in b["model"].items() if k not in ("mode", "channels")}


def _drive(tmp_path, name, *extra):
  out, work = tmp_path / f"out-{name}", tmp_path / f"work-{name}"
  cmd = [sys.executable, DRIVER, "--models", "gray-default", "--out", str(out), "--work", str(work)]
  cmd += [a for s in TINY for a in ("--set", s)] + list(extra)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return out, json.load(open(out / "summary.json"))["runs"]["gray-default"]


def _weights(out, tmp_path, tag):
  with tarfile.open(out / "gray-default.tgz") as tar:
    names = tar.getnames()
    tar.extractall(tmp_path / tag, filter="data")
  _, variables = nedenoise_jax.load(str(tmp_path / tag / "gray-default" / "gray-default.nedenoise"))
  return names, variables


def test_cut_packed_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
  cut_out, cut = _drive(tmp_path, "cut", "--stop_after", "3")
  assert (cut["step"], cut["steps"], cut["finished"], cut["start_step"]) == (3, 6, False, 0)
  names, _ = _weights(cut_out, tmp_path, "cut")
  assert "gray-default/checkpoints/3" in names and "gray-default/config.json" in names
  refused = subprocess.run([sys.executable, DRIVER, "--models", "gray-default", "--out", str(tmp_path / "o2"),
                            "--work", str(tmp_path / "work-cut"), "--resume", str(cut_out)],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
  assert refused.returncode != 0 and "already holds a run" in refused.stderr

  resumed_out, resumed = _drive(tmp_path, "resumed", "--resume", str(cut_out))
  assert (resumed["start_step"], resumed["step"], resumed["finished"]) == (3, 6, True)
  assert set(resumed["val"]) == {"val/psnr_sigma25", "val/ssim_sigma25"}
  whole_out, whole = _drive(tmp_path, "whole")
  assert (whole["start_step"], whole["step"], whole["finished"]) == (0, 6, True)

  _, a = _weights(resumed_out, tmp_path, "resumed")
  _, b = _weights(whole_out, tmp_path, "whole")
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert resumed["val"] == whole["val"]

  # shipping: the weights become pretrained:NAME with their provenance; a cut run is refused
  pretrained = tmp_path / "pretrained"
  pretrained.mkdir()
  ship = [sys.executable, os.path.join(ROOT, "scripts", "ship_defaults.py"), "--pretrained", str(pretrained)]
  env = dict(os.environ, PYTHONPATH=ROOT)
  refused = subprocess.run(ship + [str(cut_out)], capture_output=True, text=True, env=env, timeout=120)
  assert refused.returncode != 0 and "stopped at step 3 of 6" in refused.stderr
  assert not list(pretrained.iterdir())
  shipped = subprocess.run(ship + [str(whole_out)], capture_output=True, text=True, env=env, timeout=120)
  assert shipped.returncode == 0, shipped.stderr[-2000:]
  _, c = nedenoise_jax.load(str(pretrained / "gray-default.nedenoise"))
  for x, y in zip(jax.tree_util.tree_leaves(c), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  prov = json.load(open(pretrained / "provenance.json"))["gray-default"]
  assert (prov["steps"], prov["steps_done"], prov["sigma_train"]) == (6, 6, "uniform in [0, 75]")


def test_unknown_model_names_are_a_usage_error():
  proc = subprocess.run([sys.executable, DRIVER, "--models", "gray-ne", "--out", "/nonexistent/x"],
                        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
  assert proc.returncode == 2 and "gray-ne" in proc.stderr
