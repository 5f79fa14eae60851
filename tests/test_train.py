"""Training: exact resume (also after SIGKILL), 1 vs 8 devices, bad input, the CLI."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from PIL import Image

from nedenoise_jax.training import config as config_lib
from nedenoise_jax import data, metrics
from nedenoise_jax.training import checkpoints, loop as train

def tiny_config(**overrides):
  c = config_lib.base_config("fdncnn")
  c.model.features = 4
  c.model.depth = 3
  c.data.train = "builtin:deadleaves:4"
  c.data.val = ""
  c.train.steps = 10
  c.train.batch_size = 8
  c.train.patch_size = 16
  c.train.learning_rate = 1e-3
  c.train.log_every = 1
  c.train.eval_every = 0
  c.checkpoint.every_steps = 5
  c.checkpoint.async_save = False
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  c.lock()
  return c


def _params(workdir, config):
  mngr = checkpoints.manager(workdir, config)
  module = train.create_model(config)
  tx = train.create_optimizer(config)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return checkpoints.restore_state(mngr, mngr.latest_step(),
                             train.abstract_state(module, tx, config, device))


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


def test_resume_in_process_is_exact(tmp_path):
  cfg = tiny_config()
  train.train_and_evaluate(cfg, str(tmp_path / "a"), progress=False)
  train.train_and_evaluate(cfg, str(tmp_path / "b"), progress=False, stop_after=5)
  assert checkpoints.manager(str(tmp_path / "b"), cfg).latest_step() == 5
  train.train_and_evaluate(cfg, str(tmp_path / "b"), progress=False)
  for x, y in zip(_leaves(_params(str(tmp_path / "a"), cfg)), _leaves(_params(str(tmp_path / "b"), cfg))):
    np.testing.assert_array_equal(x, y)
  # The loss curve continues where it stopped.
  la = [r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "a"))]
  lb = [r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "b"))]
  assert la == lb and len(la) == 10


def test_load_workdir_and_step_folder(tmp_path):
  import nedenoise_jax

  cfg = tiny_config(**{"model.mode": "wrapped"})
  train.train_and_evaluate(cfg, str(tmp_path), progress=False)
  module, variables = nedenoise_jax.load(tmp_path)
  assert module == train.create_model(cfg)
  for x, y in zip(jax.tree_util.tree_leaves(variables["params"]), _leaves(_params(str(tmp_path), cfg))):
    np.testing.assert_array_equal(x, y)
  module5, _ = nedenoise_jax.load(tmp_path / "checkpoints" / "5", expect={"mode": "wrapped"})
  assert module5 == module
  with pytest.raises(ValueError, match="mode: file has 'wrapped', expected 'norm_equiv'"):
    nedenoise_jax.load(tmp_path, expect={"mode": "norm_equiv"})


def test_one_device_equals_eight(tmp_path):
  assert jax.device_count() == 8
  cfg = tiny_config(**{"train.steps": 20, "train.batch_size": 16, "model.mode": "norm_equiv"})
  train.train_and_evaluate(cfg, str(tmp_path / "one"), progress=False, devices=jax.devices()[:1])
  train.train_and_evaluate(cfg, str(tmp_path / "eight"), progress=False)
  l1 = np.array([r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "one"))])
  l8 = np.array([r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "eight"))])
  assert len(l1) == 20
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for x, y in zip(_leaves(_params(str(tmp_path / "one"), cfg)),
                  _leaves(_params(str(tmp_path / "eight"), cfg))):
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-7)


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", "")
  return env


def test_cli_resume_after_sigkill(tmp_path, train_command):
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  subprocess.run(train_command(ref), check=True, env=_env(), capture_output=True)
  proc = subprocess.Popen(train_command(killed), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  ckpts = killed / "checkpoints"
  while time.time() < deadline and proc.poll() is None:
    if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  assert done and done[-1] < 40, f"the kill should land mid-run, checkpoints: {done}"
  subprocess.run(train_command(killed), check=True, env=_env(), capture_output=True)
  saved = json.loads((ref / "config.json").read_text())
  assert saved["train"]["steps"] == 40 and saved["model"]["depth"] == 3  # resolved config kept
  c = tiny_config(**{"train.steps": 40, "train.batch_size": 4})
  for x, y in zip(_leaves(_params(str(ref), c)), _leaves(_params(str(killed), c))):
    np.testing.assert_array_equal(x, y)


def test_cli_sigterm_saves_and_exits(tmp_path, train_command):
  proc = subprocess.Popen(train_command(tmp_path, steps=100000), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ckpts = tmp_path / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and not (ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  stopped = int(err.split("stopped by signal 15 at step ")[1].split(";")[0])
  assert stopped < 100000 and stopped in [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()]


def test_cli_rejects_unknown_key_and_other_model(tmp_path, train_command):
  r = subprocess.run(train_command(tmp_path / "w", "--config.train.bogus=1", steps=2), env=_env(),
                     capture_output=True, text=True)
  assert r.returncode != 0 and "bogus" in r.stderr
  subprocess.run(train_command(tmp_path / "w", steps=2), check=True, env=_env(), capture_output=True)
  r = subprocess.run(train_command(tmp_path / "w", "--config.model.mode=ordinary", steps=4), env=_env(),
                     capture_output=True, text=True)
  assert r.returncode != 0 and "holds a checkpoint (step 2) of another model" in r.stderr
  assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


def test_batch_must_divide_devices(tmp_path):
  with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices.*multiple of 8"):
    train.train_and_evaluate(tiny_config(**{"train.batch_size": 12}), str(tmp_path), progress=False)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
  cfg = tiny_config(**{"train.learning_rate": 1e30, "train.steps": 20, "checkpoint.every_steps": 1,
                       "model.mode": "ordinary"})
  with pytest.raises(train.TrainingError, match="non-finite loss or gradient at step"):
    train.train_and_evaluate(cfg, str(tmp_path), progress=False)
  state = _params(str(tmp_path), cfg)
  assert all(np.all(np.isfinite(x)) for x in _leaves(state))


def _write(path, arr):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(arr).save(path)


def test_folder_source_bad_input(tmp_path):
  with pytest.raises(data.DataError, match="does not exist"):
    data.load_images(f"folder:{tmp_path / 'nope'}", 1)
  (tmp_path / "empty").mkdir()
  with pytest.raises(data.DataError, match="holds no image files"):
    data.load_images(f"folder:{tmp_path / 'empty'}", 1)
  rng = np.random.default_rng(0)
  _write(tmp_path / "d" / "a.png", rng.integers(0, 255, (20, 24), np.uint8))
  _write(tmp_path / "d" / "sub" / "b.png", rng.integers(0, 65535, (20, 24), np.uint16))
  _write(tmp_path / "d" / "c.jpg", rng.integers(0, 255, (20, 24, 3), np.uint8))
  _write(tmp_path / "d" / "small.png", rng.integers(0, 255, (8, 8), np.uint8))
  (tmp_path / "d" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  with pytest.warns(UserWarning) as record:
    images, names = data.load_images(f"folder:{tmp_path / 'd'}", 1, min_size=16)
  text = " ".join(str(w.message) for w in record)
  assert "skipped 1 unreadable image file(s)" in text and "broken.png" in text
  assert "smaller than the 16x16 patch" in text and "small.png" in text
  assert "converted 1 image(s)" in text
  assert names == ["a.png", "c.jpg", "sub/b.png"]
  assert all(i.shape == (20, 24, 1) and i.dtype == np.float32 for i in images)
  assert all(0 <= i.min() and i.max() <= 1 for i in images)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.png").write_bytes(b"junk")
  with pytest.warns(UserWarning), pytest.raises(data.DataError, match="no usable images left"):
    data.load_images(f"folder:{tmp_path / 'bad'}", 1)
  with pytest.raises(data.DataError, match="must be 'folder:PATH'"):
    data.load_images("bsd400", 1)


def test_batches_do_not_depend_on_process_split():
  images, _ = data.load_images("builtin:deadleaves:3", 1)
  kw = dict(patch_size=16, sigma_min=0.0, sigma_max=0.2, seed=1, global_batch=8, start_step=3,
            end_step=5)
  whole = list(data.train_batches(images, **kw))
  halves = [list(data.train_batches(images, process_index=p, process_count=2, **kw)) for p in (0, 1)]
  for step in range(2):
    for key in ("clean", "sigma"):
      np.testing.assert_array_equal(
          whole[step][key], np.concatenate([halves[0][step][key], halves[1][step][key]]))
  # Resuming at step 4 gives what step 4 gave.
  again = list(data.train_batches(images, **{**kw, "start_step": 4}))
  np.testing.assert_array_equal(again[0]["clean"], whole[1]["clean"])


def test_read_image_modes(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (5, 6, 2), np.uint8), "LA").save(tmp_path / "la.png")
  Image.fromarray(rng.integers(0, 255, (5, 6, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
  Image.fromarray(rng.integers(0, 255, (5, 6), np.uint8)).convert("P").save(tmp_path / "p.png")
  Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(tmp_path / "w16.png")
  assert data.read_image(str(tmp_path / "la.png")).shape == (5, 6, 1)
  assert data.read_image(str(tmp_path / "rgba.png")).shape == (5, 6, 3)
  assert data.read_image(str(tmp_path / "p.png")).shape == (5, 6, 3)
  np.testing.assert_array_equal(data.read_image(str(tmp_path / "w16.png")), 1.0)


def test_noise_kinds_one_device_equals_eight_and_resume(tmp_path):
  """Host-drawn noise (a map per example) and CBDNet's map losses: the same run on 1 and 8
  devices, and an interrupted run resumes exactly."""
  assert jax.device_count() == 8
  cfg = tiny_config(**{"model.arch": "ffdnet", "model.blind": False, "model.mode": "norm_equiv",
                       "noise.kind": "gaussian_map", "train.steps": 6, "train.batch_size": 8,
                       "checkpoint.every_steps": 3})
  train.train_and_evaluate(cfg, str(tmp_path / "one"), progress=False, devices=jax.devices()[:1])
  train.train_and_evaluate(cfg, str(tmp_path / "eight"), progress=False)
  l1 = np.array([r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "one"))])
  l8 = np.array([r["train/loss"] for r in metrics.read_metrics(str(tmp_path / "eight"))])
  assert len(l1) == 6
  np.testing.assert_allclose(l8, l1, rtol=1e-5)

  c = config_lib.base_config("cbdnet")
  c.model.update(estimator_features=4, estimator_depth=2, denoiser="fdncnn", features=(4,), depth=3)
  c.data.update(train="builtin:deadleaves:4", val="")
  c.noise.kind = "poisson_gaussian"
  c.train.update(steps=6, batch_size=8, patch_size=16, log_every=1, eval_every=0)
  c.checkpoint.update(every_steps=3, async_save=False)
  c.lock()
  train.train_and_evaluate(c, str(tmp_path / "a"), progress=False)
  train.train_and_evaluate(c, str(tmp_path / "b"), progress=False, stop_after=3)
  train.train_and_evaluate(c, str(tmp_path / "b"), progress=False)
  for x, y in zip(_leaves(_params(str(tmp_path / "a"), c)), _leaves(_params(str(tmp_path / "b"), c))):
    np.testing.assert_array_equal(x, y)
  rows = metrics.read_metrics(str(tmp_path / "a"))
  # The asymmetric and TV terms are logged beside the reconstruction loss and add up.
  r = rows[-1]
  assert {"train/rec", "train/map_asym", "train/map_tv"} <= set(r)
  np.testing.assert_allclose(r["train/loss"], r["train/rec"] + 0.5 * r["train/map_asym"] + 0.05 * r["train/map_tv"],
                             rtol=1e-5)


def test_bad_noise_and_loss_keys(tmp_path):
  for overrides, match in (({"noise.kind": "speckle"}, "config.noise.kind='speckle'"),
                           ({"noise.b_min": 0.5}, "config.noise.b_min=0.5"),
                           ({"train.loss": "huber"}, "config.train.loss='huber'")):
    with pytest.raises(ValueError, match=match):
      train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_init_from_fine_tunes_and_rejects_other_architectures(tmp_path):
  """``train.init_from`` starts from another run's (or a weights file's) parameters with a fresh
  optimizer; another architecture is refused before anything is written."""
  import nedenoise_jax
  from nedenoise_jax.training.state import create_optimizer

  base = tiny_config(**{"train.steps": 6})
  train.train_and_evaluate(base, str(tmp_path / "base"), progress=False)
  module, variables = nedenoise_jax.load(tmp_path / "base")
  weights_file = nedenoise_jax.save_weights(tmp_path / "base.nedenoise", module, variables)
  for spec in (str(tmp_path / "base"), str(weights_file)):
    cfg = tiny_config(**{"train.steps": 1, "train.init_from": spec, "data.train": "builtin:text:3"})
    wd = tmp_path / f"ft_{len(spec)}"
    train.train_and_evaluate(cfg, str(wd), progress=False)
    tuned = _params(str(wd), cfg)
    assert int(tuned.step) == 1
    # One Adam step from the source's parameters: each moves by at most ~lr (fresh moments).
    for a, b in zip(jax.tree_util.tree_leaves(variables["params"]), _leaves(tuned)):
      assert np.max(np.abs(np.asarray(a) - b)) <= 1.01 * cfg.train.learning_rate
    # The optimizer state restarted: step count 1, not 7.
    counts = [np.asarray(x) for x in jax.tree_util.tree_leaves(tuned.opt_state) if np.ndim(x) == 0]
    assert counts and all(int(c) == 1 for c in counts)
  del create_optimizer
  for overrides, match in (({"model.depth": 4}, "depth: 3 there, 4 in config.model"),
                           ({"model.mode": "ordinary"}, "mode: 'norm_equiv' there, 'ordinary' in config.model")):
    bad = tiny_config(**{"train.init_from": str(tmp_path / "base"), **overrides})
    with pytest.raises(ValueError, match="config.train.init_from=.*another architecture.*" + match):
      train.train_and_evaluate(bad, str(tmp_path / "bad"), progress=False)
    assert not (tmp_path / "bad").exists()
  with pytest.raises(ValueError, match="config.train.init_from='pretrained:nope'"):
    train.train_and_evaluate(tiny_config(**{"train.init_from": "pretrained:nope"}), str(tmp_path / "bad"),
                             progress=False)


@pytest.mark.parametrize("key, value, expected", [
    ("train.steps", -5, "an integer > 0"), ("train.steps", 0, "an integer > 0"),
    ("train.batch_size", 0, "an integer > 0"), ("train.patch_size", -16, "an integer > 0"),
    ("train.log_every", 0, "an integer > 0"), ("checkpoint.every_steps", 0, "an integer > 0"),
    ("checkpoint.keep", 0, "an integer > 0"), ("train.eval_every", -1, "an integer >= 0"),
    ("train.warmup_steps", -3, "an integer >= 0"), ("data.val_max_images", -1, "an integer >= 0"),
    ("train.learning_rate", 0.0, "a finite number > 0"),
    ("train.learning_rate", float("nan"), "a finite number > 0"),
    ("train.grad_clip", -1.0, "a finite number >= 0"), ("model.channels", 2, "1 \\(gray\\) or 3"),
])
def test_config_errors_before_any_write(tmp_path, key, value, expected):
  with pytest.raises(config_lib.ConfigError, match=f"config.{key}={value!r}: expected {expected}"):
    train.train_and_evaluate(tiny_config(**{key: value}), str(tmp_path / "w"), progress=False)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("key, value, expected", [
    ("model.depth", 0, "config.model: fdncnn depth=0: expected an integer >= 1"),
    ("model.features", 0, "config.model: fdncnn features=0: expected an integer >= 1"),
    ("model.arch", "unet", "config.model: unknown arch 'unet'"),
])
def test_model_size_errors_name_the_key_before_any_write(tmp_path, key, value, expected):
  with pytest.raises(config_lib.ConfigError, match=expected):
    train.train_and_evaluate(tiny_config(**{key: value}), str(tmp_path / "w"), progress=False)
  assert not (tmp_path / "w").exists()


def test_cli_config_and_workdir_errors_exit_2(tmp_path, train_command):
  r = subprocess.run(train_command(tmp_path / "w", steps=-5), env=_env(), capture_output=True, text=True)
  assert r.returncode == 2 and "error: config.train.steps=-5: expected an integer > 0" in r.stderr, r.stderr
  assert "Traceback" not in r.stderr and "checkpoint:" not in r.stdout and not (tmp_path / "w").exists()
  (tmp_path / "f").write_text("not a folder")
  r = subprocess.run(train_command(tmp_path / "f", steps=2), env=_env(), capture_output=True, text=True)
  assert r.returncode == 2 and f"error: workdir {tmp_path / 'f'} is a file, not a folder" in r.stderr
  assert "Traceback" not in r.stderr and (tmp_path / "f").read_text() == "not a folder"


def test_resume_with_another_optimizer_is_refused_before_any_write(tmp_path):
  cfg = tiny_config()
  wd = tmp_path / "w"
  train.train_and_evaluate(cfg, str(wd), progress=False, stop_after=5)
  saved_config = (wd / "config.json").read_text()
  rows = metrics.read_metrics(str(wd))
  for overrides, diff in (({"train.learning_rate": 2e-3}, "config.train.learning_rate: 0.001 in the "
                           "checkpoint, 0.002 now"),
                          ({"train.grad_clip": 1.0}, "config.train.grad_clip: 0.0 in the checkpoint, 1.0 now"),
                          ({"train.optimizer": "adamw"}, "config.train.optimizer: 'adam' in the checkpoint")):
    with pytest.raises(config_lib.ConfigError, match="trained with another optimizer") as e:
      train.train_and_evaluate(tiny_config(**overrides), str(wd), progress=False)
    assert diff in str(e.value) and f"--config.train.init_from={wd}" in str(e.value)
    assert (wd / "config.json").read_text() == saved_config
    assert metrics.read_metrics(str(wd)) == rows
    assert checkpoints.manager(str(wd), cfg).latest_step() == 5
  with pytest.raises(config_lib.ConfigError, match=r"holds a checkpoint \(step 5\) of another model"):
    train.train_and_evaluate(tiny_config(**{"model.depth": 4}), str(wd), progress=False)
  assert (wd / "config.json").read_text() == saved_config
  # The same optimizer with a longer run (constant schedule) resumes.
  train.train_and_evaluate(tiny_config(**{"train.steps": 12}), str(wd), progress=False)
  assert checkpoints.manager(str(wd), cfg).latest_step() == 12
  assert '"steps": 12' in (wd / "config.json").read_text()


def test_replayed_steps_do_not_duplicate_metrics(tmp_path):
  """Steps logged after the last checkpoint by a killed run are logged again by the resume:
  metrics.jsonl keeps one row per step, as the uninterrupted run's (a cut last line dropped)."""
  import shutil

  cfg = tiny_config()
  train.train_and_evaluate(cfg, str(tmp_path / "ref"), progress=False)
  wd = tmp_path / "w"
  train.train_and_evaluate(cfg, str(wd), progress=False)
  shutil.rmtree(wd / "checkpoints" / "10")  # as if killed after logging step 10, before saving it
  with open(wd / "metrics.jsonl", "a") as f:
    f.write('{"step": 11, "train/lo')  # and cut mid-line
  train.train_and_evaluate(cfg, str(wd), progress=False)
  got, want = metrics.read_metrics(str(wd)), metrics.read_metrics(str(tmp_path / "ref"))
  assert [r["step"] for r in got] == list(range(1, 11))
  assert [r["train/loss"] for r in got] == [r["train/loss"] for r in want]


def test_unknown_optimizer_schedule_or_mode_are_config_errors(tmp_path):
  for key, value, match in (("train.optimizer", "sgd", "config.train.optimizer='sgd'"),
                            ("train.schedule", "linear", "config.train.schedule='linear'"),
                            ("model.mode", "magic", "magic")):
    with pytest.raises(config_lib.ConfigError, match=match):
      train.train_and_evaluate(tiny_config(**{key: value}), str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w").exists()


def test_rerunning_a_finished_run_logs_nothing_twice(tmp_path):
  cfg = tiny_config(**{"train.steps": 4, "data.val": "builtin:deadleaves-val:2",
                       "noise.val_sigmas": (25.0,)})
  first = train.train_and_evaluate(cfg, str(tmp_path), progress=False)
  rows = metrics.read_metrics(str(tmp_path))
  again = train.train_and_evaluate(cfg, str(tmp_path), progress=False)  # nothing left to train
  assert metrics.read_metrics(str(tmp_path)) == rows
  assert again["val"] == first["val"] and again["step"] == 4
  # Settings the optimizer does not use (adam's weight decay) do not block a resume.
  train.train_and_evaluate(tiny_config(**{"train.steps": 4, "train.weight_decay": 0.1}), str(tmp_path),
                           progress=False)


def test_cosine_run_cannot_be_extended_by_resuming(tmp_path):
  cfg = tiny_config(**{"train.schedule": "cosine"})
  train.train_and_evaluate(cfg, str(tmp_path), progress=False, stop_after=5)
  with pytest.raises(config_lib.ConfigError, match=r"config.train.steps: 10 in the checkpoint, 20 now "
                                                   r"\(the cosine schedule decays over it\)"):
    train.train_and_evaluate(tiny_config(**{"train.schedule": "cosine", "train.steps": 20}), str(tmp_path),
                             progress=False)


def test_validations_reuse_one_compiled_function(tmp_path):
  # Four validations (steps 2, 4, 6 and the end) at two sigmas: one trace, one executable.
  from nedenoise_jax.evaluation import evaluate as evaluation

  cfg = tiny_config(**{"model.features": 10, "model.depth": 2, "train.steps": 6, "train.eval_every": 2,
                       "data.val": "builtin:deadleaves-val:2", "noise.val_sigmas": (15.0, 25.0)})
  fn = evaluation.scorer(train.create_model(cfg), True)
  before = fn._cache_size()
  summary = train.train_and_evaluate(cfg, str(tmp_path / "w"), progress=False)
  assert set(summary["val"]) == {15.0, 25.0}
  assert sum(1 for r in metrics.read_metrics(str(tmp_path / "w")) if "val/psnr_sigma15" in r) >= 3
  assert fn._cache_size() == before + 1
