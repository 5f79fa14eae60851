"""evaluate: same noise for every model, outputs written, table matches the committed results."""

import csv
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import nedenoise_jax as nj
from nedenoise_jax import evaluate as ev
from nedenoise_jax import models

from conftest import ROOT, TINY

SET12 = os.path.join(ROOT, "..", "shared", "data", "test", "set12")


def _weights(tmp_path, name, mode, blind=True):
  module = models.create("fdncnn", mode=mode, blind=blind, channels=1, **TINY["fdncnn"])
  v = nj.equivariance.random_variables(module, jnp.zeros((1, 8, 8, 1)), None if blind else jnp.zeros((1,)))
  return nj.save_weights(tmp_path / f"{name}.nedenoise", module, v,
                         metadata={"config": {"noise": {"sigma_min": 10.0, "sigma_max": 20.0}}})


def test_cli_outputs(tmp_path):
  a = _weights(tmp_path, "ne", "norm_equiv")
  b = _weights(tmp_path, "ord", "ordinary", blind=False)
  out = tmp_path / "res"
  rc = ev.main(["--model", a, "--model", f"plain={b}", "--data", "builtin:deadleaves-val",
                "--sigmas", "10,30", "--max_images", "2", "--out", str(out), "--no_progress"])
  assert rc == 0
  res = json.loads((out / "results.json").read_text())
  assert set(res["models"]) == {"ne", "plain"}
  assert res["models"]["ne"]["train_sigma"] == [10.0, 20.0]
  rows = res["rows"]
  assert len(rows) == 2 * 2 * 2
  # every model saw the same noisy images
  for s in (10.0, 30.0):
    noisy = {r["model"]: r["psnr_noisy"] for r in rows if r["sigma"] == s and r["image"] == rows[0]["image"]}
    assert noisy["ne"] == noisy["plain"]
  assert all(r["model_sigma"] == r["sigma"] for r in rows if r["model"] == "plain")
  with open(out / "results.csv") as f:
    assert len(list(csv.DictReader(f))) == len(rows)
  md = (out / "results.md").read_text()
  assert "| ne | plain |" in md
  assert (out / "psnr_vs_sigma.png").stat().st_size > 1000


def test_bad_arguments(tmp_path, capsys):
  assert ev.main(["--model", "nope.nedenoise", "--data", "builtin:deadleaves-val",
                  "--out", str(tmp_path)]) == 2
  assert "nope.nedenoise" in capsys.readouterr().err
  a = _weights(tmp_path, "ne", "norm_equiv")
  assert ev.main(["--model", a, "--data", "builtin:deadleaves-val", "--sigmas", "5,x",
                  "--out", str(tmp_path)]) == 2
  assert ev.main(["--model", a, "--model", a, "--data", "builtin:deadleaves-val",
                  "--out", str(tmp_path)]) == 2
  assert "display name" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(SET12), reason="../shared/data/test/set12 not present")
def test_reproduces_committed_table():
  """The shipped weights give the committed docs/results numbers (to 0.01 dB) on this machine."""
  committed = json.load(open(os.path.join(ROOT, "docs", "results", "gray", "results.json")))
  model = ev.load_model("pretrained:gray-norm_equiv")
  res = ev.evaluate([model], [f"folder:{SET12}"], [25.0], max_images=2, progress=False)
  for row in res["rows"]:
    want = next(r for r in committed["rows"] if r["model"] == "gray-norm_equiv"
                and r["sigma"] == 25.0 and r["image"] == row["image"] and "set12" in r["data"])
    assert abs(row["psnr"] - want["psnr"]) < 0.01
    assert abs(row["psnr_noisy"] - want["psnr_noisy"]) < 1e-4


def test_noise_kind_and_map_scale_sweep(tmp_path):
  """``--noise`` draws the same images for every model; ``--map_scales`` scales the map
  a non-blind model gets (x1 reproduces the main table) and a blind CBDNet's estimate;
  blind models without an estimate are left out of the sweep."""
  ff = models.create("ffdnet", mode="norm_equiv", **TINY["ffdnet"])
  vf = nj.equivariance.random_variables(ff, jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))
  a = nj.save_weights(tmp_path / "ff.nedenoise", ff, vf)
  cb = models.create("cbdnet", mode="norm_equiv", **TINY["cbdnet"])
  b = nj.save_weights(tmp_path / "cb.nedenoise", cb, nj.equivariance.random_variables(cb, jnp.zeros((1, 8, 8, 1))))
  c = _weights(tmp_path, "ne", "norm_equiv")
  out = tmp_path / "res"
  rc = ev.main(["--model", a, "--model", b, "--model", c, "--data", "builtin:deadleaves-val",
                "--sigmas", "15,40", "--max_images", "2", "--noise", "poisson_gaussian",
                "--map_scales", "0.5,1,2", "--out", str(out), "--no_progress"])
  assert rc == 0
  res = json.loads((out / "results.json").read_text())
  assert res["noise"] == "poisson_gaussian" and res["map_scales"] == [0.5, 1.0, 2.0]
  assert set(res["map_sweep"]) == {"ff", "cb"}
  for name in ("ff", "cb"):
    for s in ("15", "40"):
      sweep = res["map_sweep"][name]["builtin:deadleaves-val"][s]
      assert sweep["1"]["psnr"] == pytest.approx(res["mean"][name]["builtin:deadleaves-val"][s]["psnr"], abs=1e-9)
      assert sweep["0.5"]["psnr"] != sweep["2"]["psnr"]
  noisy = {(r["model"], r["sigma"], r["image"]): r["psnr_noisy"] for r in res["rows"]}
  for (model, s, img), v in noisy.items():
    assert v == noisy[("ne", s, img)]
  assert "scaled by a factor" in (out / "results.md").read_text()
  assert (out / "psnr_vs_map_scale.png").stat().st_size > 1000
  assert ev.main(["--model", a, "--data", "builtin:deadleaves-val", "--map_scales", "1,-2",
                  "--out", str(tmp_path / "x")]) == 2
  assert ev.main(["--model", a, "--data", "builtin:deadleaves-val", "--noise_param", "gain=2",
                  "--out", str(tmp_path / "x")]) == 2
