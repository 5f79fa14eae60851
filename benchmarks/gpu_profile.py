"""Where a step's time goes, per mode: device kernels from a JAX profile, and the optimized HLO.

    python benchmarks/gpu_profile.py --arch fdncnn --task train --train_shapes fdncnn=128x64 --out DIR

For each mode (default ordinary and norm_equiv) the same program as
``bench.py`` (its ``bench_train`` / ``bench_inference``) runs ``--steps``
times under ``jax.profiler.trace``; the trace is read back in-process
(``jax.profiler.ProfileData``) and the device kernels are summed by name:
``DIR/profile_<arch>_<task>.json`` holds, per mode, the device time and
kernel count per step and the top kernels, and the markdown table printed
compares the modes. The optimized HLO of each mode goes to
``DIR/hlo_<arch>_<task>_<mode>.txt`` (fusions, copies, pads and the
convolution custom calls show what XLA made of the layers). On a CPU the
events of XLA's host threads stand in for kernels (a rehearsal of the command).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench import bench_inference, bench_train, parse_task, parse_train_shapes  # noqa: E402


def kernel_times(trace_dir: str) -> dict:
  """{name: [total ns, count]} over the device planes of the trace in ``trace_dir`` (on a CPU,
  which has none, the events of XLA's host threads, a rehearsal's stand-in)."""
  from jax.profiler import ProfileData

  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise SystemExit(f"gpu_profile: no .xplane.pb under {trace_dir}")
  data = ProfileData.from_file(paths[0])
  planes = [p for p in data.planes if p.name.startswith("/device:")]
  host_ops = not planes
  if host_ops:
    planes = [p for p in data.planes if p.name.startswith("/host:")]
  totals: dict = collections.defaultdict(lambda: [0, 0])
  for plane in planes:
    for line in plane.lines:
      if host_ops and not line.name.startswith("tf_XLA"):
        continue
      for event in line.events:
        if host_ops and event.name.startswith(("ThreadpoolListener", "SlinkyThreadPool")):
          continue
        t = totals[event.name]
        t[0] += int(event.duration_ns)
        t[1] += 1
  return dict(totals)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--arch", default="fdncnn")
  p.add_argument("--task", default="train", help="train, inferN or inferBxN")
  p.add_argument("--modes", default="ordinary,norm_equiv")
  p.add_argument("--train_shapes", default="")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--tiny", action="store_true")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)

  import jax

  from nedenoise_jax import files

  shapes = parse_train_shapes(args.train_shapes)
  result = {"arch": args.arch, "task": args.task, "dtype": args.dtype, "steps": args.steps,
            "device": str(jax.devices()[0]), "jax": jax.__version__, "modes": {}}
  failed = {}
  for mode in args.modes.split(","):
    try:
      if args.task == "train":
        run, _ = bench_train(args.arch, mode, args.dtype, 1, shapes, args.tiny)
      else:
        batch, side = parse_task(args.task)
        run, _ = bench_inference(args.arch, mode, side, args.dtype, 1, False, batch, args.tiny)
    except Exception as e:  # a kernel a backend refuses: the other modes are still profiled
      failed[mode] = f"{type(e).__name__}: {str(e)[:4000]}"
      print(f"{mode:12s} FAILED {failed[mode][:1000]}", flush=True)
      continue
    files.write_text(os.path.join(args.out, f"hlo_{args.arch}_{args.task}_{mode}.txt"), run.compiled.as_text())
    jax.block_until_ready(run())  # warm-up
    with tempfile.TemporaryDirectory() as d:
      with jax.profiler.trace(d):
        for _ in range(args.steps):
          jax.block_until_ready(run())
      totals = kernel_times(d)
    per_step = sum(t for t, _ in totals.values()) / args.steps
    top = sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]
    result["modes"][mode] = {
        "device_ms_per_step": per_step / 1e6,
        "kernels_per_step": sum(c for _, c in totals.values()) / args.steps,
        "top": [{"name": n, "ms_per_step": t / 1e6 / args.steps, "calls_per_step": c / args.steps,
                 "share": t / max(1, sum(x for x, _ in totals.values()))} for n, (t, c) in top]}
    print(f"{mode:12s} {per_step / 1e6:9.3f} ms/step  {result['modes'][mode]['kernels_per_step']:.0f} "
          "kernels/step", flush=True)
  result["failed"] = failed
  out = os.path.join(args.out, f"profile_{args.arch}_{args.task}.json")
  files.write_text(out, json.dumps(result, indent=1))
  for mode, r in result["modes"].items():
    print(f"\n### {mode}: {r['device_ms_per_step']:.3f} ms per step\n\n| kernel | ms/step | calls | share |\n|---|---:|---:|---:|")
    for k in r["top"][:12]:
      print(f"| {k['name'][:70]} | {k['ms_per_step']:.3f} | {k['calls_per_step']:.0f} | {k['share']:.1%} |")
  print(f"\nwrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
