"""Trains the shipped default denoisers together on one GPU, within a deadline, and packs what to bring back.

    python scripts/train_defaults.py --data DATA --out OUT [--deadline 470] [--resume DIR]

The four runs of the ``defaults`` config (nedenoise_jax/configs/defaults.py): gray and
colour, norm_equiv and ordinary, each a ``nedenoise train`` process of its own sharing
the GPU (``--models`` picks some). At the deadline (seconds from the start) the runs
still going get SIGTERM: each finishes its step, writes a checkpoint and exits. Then,
for each run, ``OUT/NAME.tgz`` holds its latest checkpoint (optimizer state included),
``config.json``, ``metrics.jsonl``, its log and the weights file ``NAME.nedenoise``
exported from that checkpoint; ``OUT/summary.json`` says how far each run got, how fast,
and its validation PSNRs. Each archive is about 10.5 MB (the 0.67 M parameters and the two
Adam moments of a full-size FDnCNN, and the weights file), under the device tool's 16 MB per
file. Each run is packed as soon as it ends, by this process with JAX on the CPU.

A run the deadline cut short goes on from where it stopped: pass the folder holding its
archive as ``--resume`` (the checkpoint is unpacked into the workdir and ``nedenoise
train`` resumes it; the result is the same run as one never interrupted, since the data
stream and the noise are functions of the step).

``DATA``: a folder holding train/bsd400, test/set12 (gray) and train/cbsd432,
test/cbsd68 (colour; only its first 12 images are used, for validation). ``--set
KEY=VALUE`` passes ``--config.KEY=VALUE`` to every run (the CPU rehearsal shrinks
steps and batch this way); ``--stop_after N`` stops every run after N steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time

from nedenoise_jax import files
from nedenoise_jax.evaluation.metrics import read_metrics

# name -> (mode, channels)
MODELS = {
    "gray-default": ("norm_equiv", 1),
    "gray-default-ordinary": ("ordinary", 1),
    "color-default": ("norm_equiv", 3),
    "color-default-ordinary": ("ordinary", 3),
}
MAX_ARCHIVE = 16 * 1024 * 1024  # the device tool brings back files of at most 16 MiB
GRACE = 45  # seconds a run gets after SIGTERM to finish its step and write its checkpoint


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default="", help="folder with train/bsd400, train/cbsd432, test/set12, "
                 "test/cbsd68 (empty: the config's built-in data, for rehearsals)")
  p.add_argument("--out", required=True, help="folder for NAME.tgz and summary.json")
  p.add_argument("--work", default="", help="folder for the workdirs (default: OUT/../defaults-work)")
  p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
  p.add_argument("--deadline", type=float, default=470.0,
                 help="seconds from this script's start after which the runs still going are stopped "
                      f"(each then has {GRACE} s to write its checkpoint)")
  p.add_argument("--resume", default="", help="folder holding NAME.tgz archives of cut runs to resume")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override for every run (repeatable)")
  p.add_argument("--stop_after", type=int, default=0, help="stop every run after this many steps")
  args = p.parse_args(argv)
  names = [n for n in args.models.split(",") if n]
  unknown = [n for n in names if n not in MODELS]
  if unknown or not names:
    p.error(f"--models: unknown {unknown}; expected names from {', '.join(MODELS)}")
  args.names = names
  for s in args.set:
    if "=" not in s:
      p.error(f"--set {s!r}: expected KEY=VALUE")
  return args


def train_command(name: str, args, workdir: str) -> list[str]:
  mode, channels = MODELS[name]
  spec = mode + (",color" if channels == 3 else "") + (f",root={args.data}" if args.data else "")
  cmd = [sys.executable, "-m", "nedenoise_jax.cli", "train", "--config", f"defaults:{spec}",
         "--workdir", workdir]
  cmd += [f"--config.{s}" for s in args.set]
  if args.stop_after:
    cmd += ["--stop_after", str(args.stop_after)]
  return cmd


def unpack(archive: str, workdir: str) -> None:
  """The archive's run (``NAME/...``) into ``workdir``, which must not hold a run yet."""
  if os.path.exists(os.path.join(workdir, "checkpoints")):
    raise SystemExit(f"--resume: {workdir} already holds a run; give a new --work")
  with tarfile.open(archive) as tar:
    members = tar.getmembers()
    top = {m.name.split("/")[0] for m in members}
    if len(top) != 1:
      raise SystemExit(f"--resume: {archive} should hold one folder, holds {sorted(top)}")
    staging = workdir + ".unpack"
    shutil.rmtree(staging, ignore_errors=True)
    tar.extractall(staging, filter="data")
  os.makedirs(os.path.dirname(workdir) or ".", exist_ok=True)
  os.replace(os.path.join(staging, top.pop()), workdir)
  os.rmdir(staging)


def latest_step(workdir: str):
  d = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
  return max(steps) if steps else None


def run_all(args, workdirs: dict, env: dict, t0: float, on_exit) -> dict:
  """Starts every run, stops the ones still going at the deadline (``args.deadline`` seconds after
  ``t0``); calls ``on_exit(name, record)`` as each run ends; returns ``name -> record``."""
  n = len(workdirs)
  env = dict(env, PYTHONUNBUFFERED="1",
             # each process takes its share of the GPU's memory instead of 75% of it
             XLA_PYTHON_CLIENT_MEM_FRACTION=env.get("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / n:.3f}"))
  procs, logs, records = {}, {}, {}
  for name, wd in workdirs.items():
    os.makedirs(wd, exist_ok=True)
    cmd = train_command(name, args, wd)
    logs[name] = open(os.path.join(wd, "train.log"), "a")
    logs[name].write(f"$ {' '.join(cmd)}\n")
    logs[name].flush()
    procs[name] = subprocess.Popen(cmd, stdout=logs[name], stderr=subprocess.STDOUT, env=env)
    records[name] = {"command": cmd, "start_step": latest_step(wd) or 0}
    print(f"started {name} (pid {procs[name].pid}) from step {records[name]['start_step']}", flush=True)
  stopped, done, last_report = set(), set(), 0.0
  while len(done) < len(procs):
    for name, p in procs.items():
      if name not in done and p.poll() is not None:  # packed at once: a later kill costs nothing
        done.add(name)
        logs[name].close()
        records[name].update(returncode=p.returncode, stopped_at_deadline=name in stopped,
                             wall_s=round(time.time() - t0, 1))
        on_exit(name, records[name])
    if len(done) == len(procs):
      break
    now = time.time() - t0
    if now >= args.deadline:
      for name, p in procs.items():
        if p.poll() is None and name not in stopped:
          p.send_signal(signal.SIGTERM)
          stopped.add(name)
          print(f"{now:.0f} s: deadline, SIGTERM to {name}", flush=True)
      if now >= args.deadline + GRACE:
        for name, p in procs.items():
          if p.poll() is None:
            p.kill()
            print(f"{now:.0f} s: {name} did not stop in {GRACE} s, killed", flush=True)
    if now - last_report >= 30:
      last_report = now
      parts = []
      for name, wd in workdirs.items():
        rows = [r for r in read_metrics(wd) if "train/loss" in r]
        if rows:
          parts.append(f"{name} step {rows[-1]['step']} ({rows[-1]['train/steps_per_s']:.1f}/s)")
      print(f"{now:.0f} s: " + ("; ".join(parts) or "compiling"), flush=True)
    time.sleep(1)
  return records


def export_and_pack(name: str, wd: str, out: str, record: dict, provenance: dict) -> None:
  """Exports the latest checkpoint's weights and packs the run into ``OUT/NAME.tgz``."""
  from absl import logging

  import nedenoise_jax

  logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only manager does not save
  step = latest_step(wd)
  record.update(step=step, archive=None)
  if step is None:  # the run failed before its first checkpoint: its log says why
    return
  with open(os.path.join(wd, "config.json")) as f:
    config = json.load(f)
  rows = read_metrics(wd)
  train_rows = [r for r in rows if "train/steps_per_s" in r and r["step"] > record["start_step"]]
  val = {k: v for r in rows if r.get("step") == step for k, v in r.items() if k.startswith("val/")}
  record.update(steps=config["train"]["steps"], finished=step == config["train"]["steps"],
                steps_per_s=train_rows[-1]["train/steps_per_s"] if train_rows else None, val=val)
  module, variables = nedenoise_jax.load(wd)
  weights = os.path.join(wd, name + ".nedenoise")
  nedenoise_jax.save_weights(weights, module, variables, overwrite=True,
                             metadata=dict(provenance, name=name, step=step, steps=record["steps"]))
  archive = os.path.join(out, name + ".tgz")
  with files.atomic_open(archive, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
    for part in ("config.json", "metrics.jsonl", "train.log", name + ".nedenoise"):
      if os.path.exists(os.path.join(wd, part)):
        tar.add(os.path.join(wd, part), arcname=f"{name}/{part}")
    tar.add(os.path.join(wd, "checkpoints", str(step)), arcname=f"{name}/checkpoints/{step}")
  record["archive"] = os.path.basename(archive)
  record["archive_bytes"] = os.path.getsize(archive)
  if record["archive_bytes"] > MAX_ARCHIVE:
    record["note"] = f"{archive} is over 16 MiB and will not come back from the device"


def device_info() -> dict:
  """The GPU (from nvidia-smi: this process runs JAX on the CPU) and the versions."""
  import jax

  try:
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=30).stdout.split("\n")
    device = next(g.strip() for g in gpus if g.strip())
  except (OSError, subprocess.SubprocessError, StopIteration):
    device = "cpu (" + (platform.processor() or platform.machine()) + ")"
  info = {"device": device, "jax": jax.__version__, "host": platform.node(),
          "python": platform.python_version()}
  try:
    import flax
    import optax

    info.update(flax=flax.__version__, optax=optax.__version__)
  except ImportError:
    pass
  return info


def main(argv=None) -> int:
  t0 = time.time()  # the deadline counts from here
  args = parse_args(argv)
  # This process only exports and packs: JAX on the CPU, so that it takes no GPU memory and
  # starts no CUDA context beside the runs (a config update: jax is imported already, and reads
  # JAX_PLATFORMS only at its import).
  import jax

  jax.config.update("jax_platforms", "cpu")
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  work = os.path.abspath(args.work or os.path.join(os.path.dirname(out), "defaults-work"))
  workdirs = {name: os.path.join(work, name) for name in args.names}
  for name, wd in workdirs.items():
    archive = os.path.join(args.resume, name + ".tgz") if args.resume else ""
    if archive and os.path.exists(archive):
      unpack(archive, wd)
      print(f"{name}: resuming {archive} at step {latest_step(wd)}", flush=True)
  info = device_info()
  provenance = {"recipe": "nedenoise_jax/configs/defaults.py", "device": info["device"],
                "data": args.data or "builtin", "overrides": args.set}

  def pack(name, record):
    try:
      export_and_pack(name, workdirs[name], out, record, provenance)
      print(f"{time.time() - t0:.0f} s: {name} ended (exit {record['returncode']}), packed "
            f"{record.get('archive')}", flush=True)
    except Exception as e:  # one broken run must not cost the others' archives
      record["error"] = f"{type(e).__name__}: {e}"

  records = run_all(args, workdirs, dict(os.environ), t0, pack)
  summary = {"argv": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
             "wall_s": round(time.time() - t0, 1), "deadline_s": args.deadline, "machine": info,
             "runs": records}
  files.write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1, default=str))
  for name, r in records.items():
    print(f"{name}: step {r.get('step')}/{r.get('steps')}, exit {r['returncode']}, "
          f"{r.get('steps_per_s') or 0:.2f} steps/s, val {json.dumps(r.get('val', {}))}"
          + (f", {r['error']}" if "error" in r else ""), flush=True)
  ok = all(r["returncode"] == 0 and r.get("archive") for r in records.values())
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
