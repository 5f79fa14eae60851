"""Ships the default denoisers a GPU run of scripts/gpu_defaults.sh brought back.

    python scripts/ship_defaults.py BROUGHT_BACK [--pretrained DIR] [--force] [--allow_unfinished]

``BROUGHT_BACK``: the folder holding ``summary.json`` and the ``NAME.tgz`` archives. Each
finished run's weights file becomes ``pretrained:NAME`` (``DIR/NAME.nedenoise``, by default
the package's ``nedenoise_jax/io/pretrained``), checked to load as the model its config
describes, and its provenance (command, data, recipe, steps, device, time, validation PSNRs)
is merged into ``DIR/provenance.json``. An existing file is replaced only with ``--force``;
a run the deadline cut short is refused unless ``--allow_unfinished``. Then evaluate them
(scripts/evaluate_defaults.sh) and point ``denoise.DEFAULT_MODELS`` at them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile

import nedenoise_jax
from nedenoise_jax import files
from nedenoise_jax.io import weights as weights_lib


def describe_recipe(config: dict) -> dict:
  t, n, m = config["train"], config["noise"], config["model"]
  clip = f", global-norm clip {t['grad_clip']:g}" if t["grad_clip"] else ""
  return {
      "model": f"{'blind' if m['blind'] else 'non-blind'} FDnCNN, {m['depth']} layers x {m['features']} features",
      "steps": t["steps"], "batch": t["batch_size"], "patch": t["patch_size"],
      "sigma_train": f"uniform in [{n['sigma_min']:g}, {n['sigma_max']:g}]",
      "optimizer": f"{t['optimizer'].capitalize()} {t['learning_rate']:g}, {t['warmup_steps']} warm-up steps, "
                   f"{t['schedule']} decay{clip}, {t['loss'].upper()}",
  }


def ship(brought_back: str, pretrained: str, *, force: bool = False, allow_unfinished: bool = False) -> list[str]:
  with open(os.path.join(brought_back, "summary.json")) as f:
    summary = json.load(f)
  prov_path = os.path.join(pretrained, "provenance.json")
  provenance = {}
  if os.path.exists(prov_path):
    with open(prov_path) as f:
      provenance = json.load(f)
  # Every run is checked, its weights loaded from a temporary copy, before anything is written.
  ready = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, run in summary["runs"].items():
      if not run.get("archive"):
        raise SystemExit(f"{name}: the run left no archive ({run.get('error') or 'see its log'}); "
                         "nothing was shipped")
      if not run["finished"] and not allow_unfinished:
        raise SystemExit(f"{name}: stopped at step {run['step']} of {run['steps']}; resume it "
                         "(scripts/gpu_defaults.sh) or pass --allow_unfinished; nothing was shipped")
      target = os.path.join(pretrained, name + weights_lib.SUFFIX)
      if os.path.exists(target) and not force:
        raise SystemExit(f"{target} exists; pass --force to replace it; nothing was shipped")
      with tarfile.open(os.path.join(brought_back, run["archive"])) as tar:
        data = tar.extractfile(f"{name}/{name}{weights_lib.SUFFIX}").read()
        config = json.load(tar.extractfile(f"{name}/config.json"))
      probe = os.path.join(tmp, name + weights_lib.SUFFIX)
      with open(probe, "wb") as f:
        f.write(data)
      module, _ = nedenoise_jax.load(probe)  # a file that does not load is not shipped
      m = config["model"]
      want = {"arch": m["arch"], "mode": m["mode"], "channels": m["channels"], "blind": m["blind"]}
      got = {k: nedenoise_jax.models.describe(module)[k] for k in want}
      if got != want:
        raise SystemExit(f"{name}: the weights file holds {got}, its config says {want}; nothing was shipped")
      ready.append((name, target, data, _provenance(name, run, config, summary)))
  for name, target, data, entry in ready:
    files.write_bytes(target, data)
    provenance[name] = entry
  files.write_text(prov_path, json.dumps(provenance, indent=1) + "\n")
  return [name for name, *_ in ready]


def _provenance(name: str, run: dict, config: dict, summary: dict) -> dict:
  machine, m = summary["machine"], config["model"]
  spec = m["mode"] + (",color" if m["channels"] == 3 else "")
  val = {k[len("val/psnr_sigma"):]: round(v, 2) for k, v in run["val"].items() if k.startswith("val/psnr")}
  val_set = "set12" if m["channels"] == 1 else "cbsd68"
  return {
      "command_today": f"nedenoise train --config defaults:{spec},root=DATA --workdir ... "
                       "(scripts/gpu_defaults.sh trains the four together)",
      "data": "folder:DATA/" + ("train/bsd400" if m["channels"] == 1 else "train/cbsd432"),
      **describe_recipe(config),
      "steps_done": run["step"],
      "hardware": f"one {machine['device']} (JAX {machine['jax']}), {len(summary['runs'])} runs concurrently on it",
      "train_time": f"{run['wall_s'] / 60:.1f} min" + (
          f" (this call, resumed at step {run['start_step']}; earlier calls not counted)"
          if run["start_step"] else ""),
      "steps_per_s": round(run["steps_per_s"], 2) if run.get("steps_per_s") else None,
      "date": summary["date"],
      f"val_psnr_{val_set}": val,
      "val_images": config["data"]["val_max_images"] or "all",
      "data_root": "DATA: the project's benchmark-data folder (BSD400, CBSD432 for training)",
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("brought_back")
  p.add_argument("--pretrained", default=weights_lib.PRETRAINED_DIR)
  p.add_argument("--force", action="store_true")
  p.add_argument("--allow_unfinished", action="store_true")
  a = p.parse_args(argv)
  for name in ship(a.brought_back, a.pretrained, force=a.force, allow_unfinished=a.allow_unfinished):
    print(f"shipped pretrained:{name} -> {os.path.join(a.pretrained, name + weights_lib.SUFFIX)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
