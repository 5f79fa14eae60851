"""Training-step time and page faults with glibc's default malloc and with ``runtime.TUNABLES``.

    python benchmarks/malloc.py [--archs fdncnn,drunet] [--repeats 5] [--out STEM]

Each setting runs in its own process (a tunable is read at start): for each
model, the ``ordinary`` and ``norm_equiv`` training steps of ``bench.py``,
interleaved, after two warm-up steps; per step the median wall time, minor
page faults and kernel (system) CPU time, and the process's peak resident
memory at the end. JSON and markdown in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def child(archs: list[str], repeats: int) -> list[dict]:
  import jax

  import bench
  from nedenoise_jax.training import loop as train

  train.configure_cpu_devices(-1, 4)
  rows = []
  for arch in archs:
    runs = {mode: bench.bench_train(arch, mode, "float32", repeats)[0]
            for mode in ("ordinary", "norm_equiv")}
    for run in runs.values():
      for _ in range(2):
        jax.block_until_ready(run())
    stats = {mode: {"s": [], "faults": [], "sys_s": []} for mode in runs}
    for _ in range(repeats):
      for mode, run in runs.items():
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        jax.block_until_ready(run())
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        stats[mode]["s"].append(time.perf_counter() - t0)
        stats[mode]["faults"].append(r1.ru_minflt - r0.ru_minflt)
        stats[mode]["sys_s"].append(r1.ru_stime - r0.ru_stime)
    for mode, st in stats.items():
      rows.append({"arch": arch, "mode": mode, "median_s": statistics.median(st["s"]),
                   "faults_per_step": statistics.median(st["faults"]),
                   "sys_s_per_step": statistics.median(st["sys_s"]), **st})
    del runs
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  for r in rows:
    r["peak_rss_gib"] = peak
  return rows


def markdown(results: dict) -> str:
  lines = ["| malloc | model | mode | step (s) | / ordinary | page faults per step | "
           "kernel CPU per step (s) | peak RSS (GiB) |", "|---|---|---|---:|---:|---:|---:|---:|"]
  for setting, rows in results["settings"].items():
    base = {r["arch"]: r["median_s"] for r in rows if r["mode"] == "ordinary"}
    for r in rows:
      lines.append(f"| {setting} | {r['arch']} | {r['mode']} | {r['median_s']:.3f} | "
                   f"{r['median_s'] / base[r['arch']]:.2f} | {r['faults_per_step']:.0f} | "
                   f"{r['sys_s_per_step']:.2f} | {r['peak_rss_gib']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--archs", default="fdncnn,drunet")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "results", "malloc"))
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(child(args.archs.split(","), args.repeats)))
    return 0
  from bench import write_results
  from nedenoise_jax import runtime

  base_env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  settings = {"glibc default": {**base_env, runtime.ENV: "0"},
              "runtime.TUNABLES": {**base_env, runtime.ENV: "0",
                                   "GLIBC_TUNABLES": ":".join(runtime.TUNABLES)}}
  results = {"settings": {}, "tunables": list(runtime.TUNABLES), "repeats": args.repeats}
  for name, env in settings.items():
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--archs", args.archs,
                          "--repeats", str(args.repeats)], env=env, capture_output=True, text=True,
                         check=True)
    results["settings"][name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(markdown(results), flush=True)
  write_results(args.out, results, markdown(results))
  print(f"wrote {args.out}.json and {args.out}.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
