"""The ``nedenoise`` command: every subcommand reaches its module; shipped config names resolve."""

import os

import numpy as np
import pytest

from nedenoise_jax import cli
from nedenoise_jax.io import images


@pytest.fixture(autouse=True)
def _no_reexec(monkeypatch):
  monkeypatch.setenv("NEDENOISE_MALLOC", "0")  # cli.main would re-execute the test process otherwise


def test_denoise_subcommand_on_the_shipped_sample(tmp_path, capsys):
  assert cli.main(["nedenoise", "denoise", images.SAMPLE, "--out", str(tmp_path)]) == 0
  out = images.read_image(str(tmp_path / os.path.basename(images.SAMPLE)))
  noisy = images.read_image(images.SAMPLE)
  assert out.shape == noisy.shape and out.dtype == np.uint8
  assert np.std(out.astype(float) - noisy) > 5  # noise of sigma 25 was removed
  assert "denoised 1 of 1" in capsys.readouterr().out


@pytest.mark.parametrize("sub", sorted(cli.MODULES))
def test_every_subcommand_has_a_help(sub, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["nedenoise", sub, "--help"])
  assert e.value.code == 0
  assert "usage" in capsys.readouterr().out.lower()


def test_unknown_subcommand_and_config_names(tmp_path, capsys):
  assert cli.main(["nedenoise", "bogus"]) == 2
  assert "unknown command 'bogus'" in capsys.readouterr().err
  assert cli.resolve_config("quickstart:root=/x").endswith(os.path.join("nedenoise_jax", "configs", "quickstart.py")
                                                           + ":root=/x")
  own = tmp_path / "mine.py"
  assert cli.resolve_config(f"{own}:gray") == f"{own}:gray"
  with pytest.raises(ValueError, match="no shipped config 'nope'.*quickstart"):
    cli.resolve_config("nope")


def test_train_in_process_takes_overrides_from_argv(tmp_path):
  """cli.train(argv): the --config.KEY overrides come from argv (not the test runner's sys.argv), and it returns."""
  import json
  import subprocess
  import sys

  code = ("import sys; from nedenoise_jax import cli; cli.train(sys.argv[1:]); print('returned')")
  argv = ["nedenoise train", "--config", "quickstart", "--workdir", str(tmp_path / "a"), "--stop_after=1",
          "--config.model.features=4", "--config.model.depth=2", "--config.train.batch_size=2",
          "--config.train.patch_size=8", "--config.train.steps=2", "--config.data.train=builtin:deadleaves:2",
          "--config.data.val=", "--config.checkpoint.every_steps=1", "--cpu_devices=1"]
  env = {**os.environ, "NEDENOISE_MALLOC": "0", "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "returned" in out.stdout
  a = json.load(open(tmp_path / "a" / "config.json"))
  assert a["train"]["steps"] == 2 and a["model"]["depth"] == 2
  assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["1"]


def test_a_denoise_only_install_denoises_evaluates_and_names_the_missing_extra(tmp_path):
  from without_extras import nedenoise

  def run(*args):
    return nedenoise(*args, cwd=tmp_path)

  r = run("denoise", images.SAMPLE, "--out", "den")
  assert r.returncode == 0 and (tmp_path / "den" / os.path.basename(images.SAMPLE)).is_file(), r.stderr
  r = run("evaluate", "--model", "pretrained:gray-norm_equiv", "--data", "builtin:deadleaves-val:1",
          "--sigmas", "25", "--out", "ev", "--no_progress")
  assert r.returncode == 0, r.stderr
  assert "no plot drawn, matplotlib is not installed" in r.stderr and "Traceback" not in r.stderr
  assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["results.csv", "results.json", "results.md"]
  for args, missing in ((("train", "--config", "quickstart", "--workdir", "w"), "ml_collections"),
                        (("analyze", "erf", "--model", "pretrained:gray-norm_equiv", "--out", "an"), "matplotlib")):
    r = run(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"needs {missing}, which this install lacks: pip install 'nedenoise-jax[train]'" in r.stderr
  assert not (tmp_path / "w").exists() and not (tmp_path / "an").exists()
