"""Convolution throughput per layer shape: forward, input gradient, kernel gradient.

    python benchmarks/conv_layers.py [--repeats 7] [--cpu_devices -1] [--out STEM]

The 3x3 stride-1 layers of full-size FDnCNN (16x64x64, 64 channels) and DRUNet
(4x128x128 at 64 channels down to 4x16x16 at 512), batch-sharded over the
devices as in a training step, in the two forms the models use: zero-padded
(``ordinary``/``scale_equiv``: ``kernels.conv2d`` with SAME padding) and
reflect-padded (``norm_equiv``: ``kernels.conv2d(..., pad_mode="reflect")``,
which pads inside the oneDNN call on the CPU, and is ``ops.reflect_pad``
then a VALID convolution elsewhere). Each part is its own jitted program (``xla_options.jit``),
timed as the median of ``--repeats`` runs after a warm-up; GFLOP/s count
2 x multiply-adds of the convolution.

On the CPU the script also measures the float32 peak it compares with:
``fma_peak.c`` (compiled here with ``cc -O2 -march=native``; one copy per core,
run at once) times independent chains of fused multiply-adds on the widest
vectors the CPU has, which is the FMA units' throughput, i.e. the peak. For
context it also times numpy's sgemm (the BLAS numpy ships with) and the same
4096x4096 product as an XLA dot. Without a C compiler the larger matrix
product stands in for the peak (where the convolutions exceed it, no
percentage is given). JSON and markdown next to ``bench.py``'s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [  # (model, batch, size, channels)
    ("fdncnn", 16, 64, 64),
    ("drunet level 0", 4, 128, 64),
    ("drunet level 1", 4, 64, 128),
    ("drunet level 2", 4, 32, 256),
    ("drunet level 3", 4, 16, 512),
]


def sgemm_peak(n: int = 4096, repeats: int = 5) -> float:
  import numpy as np

  a = np.random.default_rng(0).random((n, n), np.float32)
  a @ a
  best = min(_timed(lambda: a @ a) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def xla_dot_peak(n: int = 4096, repeats: int = 5) -> float:
  """The same product as a jitted XLA dot (YNNPACK on the CPU): on AVX-512 CPUs it beats numpy's BLAS."""
  import jax
  import numpy as np

  from nedenoise_jax import xla_options

  a = jax.device_put(np.random.default_rng(0).random((n, n), np.float32), jax.devices()[0])
  f = xla_options.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = min(_timed(lambda: jax.block_until_ready(f(a))) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def fma_peak(seconds: float = 3.0) -> dict | None:
  """FMA throughput of all cores at once (``fma_peak.c``), or None without a C compiler."""
  cc = shutil.which(os.environ.get("CC", "cc"))
  if cc is None:
    return None
  src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fma_peak.c")
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  with tempfile.TemporaryDirectory() as tmp:
    exe = os.path.join(tmp, "fma_peak")
    built = subprocess.run([cc, "-O2", "-march=native", "-o", exe, src], capture_output=True, text=True)
    if built.returncode:
      print(f"fma_peak.c did not compile ({built.stderr.strip()[:200]}); no FMA peak", flush=True)
      return None
    procs = [subprocess.Popen([exe, str(seconds)], stdout=subprocess.PIPE, text=True)
             for _ in range(cores)]
    outs = [p.communicate()[0].split() for p in procs]
  if any(p.returncode or len(o) < 2 for p, o in zip(procs, outs)):
    print("fma_peak did not run on every core; no FMA peak", flush=True)
    return None
  per_core = [float(o[0]) for o in outs]
  return {"gflops": sum(per_core), "per_core_gflops": per_core, "lanes": int(outs[0][1]),
          "cores": cores}


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def measure(repeats: int) -> list[dict]:
  import jax
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  from nedenoise_jax import kernels, ops, xla_options
  from nedenoise_jax.training import loop as train
  from bench import repeat_times

  mesh = train.make_mesh()
  shard, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  forms = {
      "zero-padded": lambda x, k: kernels.conv2d(x, k, 1, ops.same_padding((3, 3))),
      "reflect-padded": lambda x, k: kernels.conv2d(x, k, 1, ops.same_padding((3, 3)), pad_mode="reflect"),
  }
  rows = []
  rng = np.random.default_rng(0)
  for model, n, s, c in SHAPES:
    x = jax.device_put(rng.random((n, s, s, c), np.float32), shard)
    g = jax.device_put(rng.random((n, s, s, c), np.float32), shard)
    k = jax.device_put((rng.standard_normal((3, 3, c, c)) * 0.02).astype(np.float32), rep)
    gflop = 2 * n * s * s * c * c * 9 / 1e9
    for form, f in forms.items():
      parts = {
          "forward": (xla_options.jit(f, out_shardings=shard), (x, k)),
          "input gradient": (xla_options.jit(lambda x, k, g, f=f: jax.vjp(f, x, k)[1](g)[0],
                                             out_shardings=shard), (x, k, g)),
          "kernel gradient": (xla_options.jit(lambda x, k, g, f=f: jax.vjp(f, x, k)[1](g)[1],
                                              out_shardings=rep), (x, k, g)),
      }
      for part, (fn, args) in parts.items():
        times = repeat_times(lambda: fn(*args), repeats)
        med = statistics.median(times)
        rows.append({"model": model, "shape": [n, s, s, c], "form": form, "part": part,
                     "median_s": med, "times_s": times, "gflop": gflop,
                     "gflops_per_s": gflop / med})
        print(f"{model:15s} {form:15s} {part:16s} {med * 1e3:7.1f} ms {gflop / med:6.1f} GFLOP/s",
              flush=True)
  return rows


def markdown(results: dict) -> str:
  peak = results.get("peak_gflops", results.get("sgemm_peak_gflops"))
  fma = results.get("fma_peak")
  best = max(r["gflops_per_s"] for r in results["rows"])
  note = ""
  if fma:
    note = (f"GFLOP/s (percent of the {peak:.0f} GFLOP/s float32 FMA peak: fma_peak.c on "
            f"{fma['cores']} cores at once, {fma['lanes']}-float vectors; 4096x4096 matrix product: "
            f"numpy sgemm {results['sgemm_peak_gflops']:.0f}, XLA dot "
            f"{results['xla_dot_peak_gflops']:.0f} GFLOP/s)\n\n")
  elif peak and best > peak:  # the matrix products are no measure of this CPU's peak
    note = (f"GFLOP/s. The convolutions reach {best:.0f} GFLOP/s, above the {peak:.0f} GFLOP/s of the "
            "best 4096x4096 matrix product measured (numpy sgemm, XLA dot), so no percentage of "
            "peak is given.\n\n")
    peak = None
  lines = ["| layer | N×H×W×C | form | forward | input gradient | kernel gradient |",
           "|---|---|---|--:|--:|--:|"]
  table: dict = {}
  for r in results["rows"]:
    table.setdefault((r["model"], tuple(r["shape"]), r["form"]), {})[r["part"]] = r["gflops_per_s"]

  def cell(v):
    return f"{v:.0f}" + (f" ({100 * v / peak:.0f}%)" if peak else "")

  for (model, shape, form), parts in table.items():
    lines.append(f"| {model} | {'×'.join(map(str, shape))} | {form} | "
                 + " | ".join(cell(parts[p]) for p in ("forward", "input gradient", "kernel gradient"))
                 + " |")
  head = note or (f"GFLOP/s (percent of the {peak:.0f} GFLOP/s 4096x4096 matrix-product peak)\n\n"
                  if peak else "GFLOP/s\n\n")
  return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--cpu_devices", type=int, default=-1,
                 help="CPU only: JAX devices to split the CPU into (-1: one per core, as train.py)")
  p.add_argument("--out", default=None, help="output stem (default benchmarks/results/conv_<platform>)")
  args = p.parse_args(argv)

  import jax

  from nedenoise_jax.training import loop as train

  if args.cpu_devices:
    train.configure_cpu_devices(args.cpu_devices, 4)
  backend = jax.default_backend()
  fma = fma_peak() if backend == "cpu" else None
  sgemm = sgemm_peak() if backend == "cpu" else None
  dot = xla_dot_peak() if backend == "cpu" else None
  peak = (fma["gflops"] if fma else max(sgemm, dot)) if backend == "cpu" else None
  if peak:
    print(f"FMA peak {fma['gflops'] if fma else float('nan'):.1f}; 4096^3 matrix product: "
          f"numpy sgemm {sgemm:.1f}, XLA dot {dot:.1f} GFLOP/s", flush=True)
  from bench import cpu_model, write_results

  results = {"rows": measure(args.repeats), "fma_peak": fma, "sgemm_peak_gflops": sgemm,
             "xla_dot_peak_gflops": dot, "peak_gflops": peak, "cpu": cpu_model(),
             "environment": {"backend": backend, "devices": [str(d) for d in jax.devices()],
                             "jax": jax.__version__, "repeats": args.repeats,
                             "machine": platform.machine(), "cpu_count": os.cpu_count(),
                             "date": time.strftime("%Y-%m-%d")}}
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 f"conv_{backend}")
  md = markdown(results)
  write_results(out, results, md)
  print(md)
  print(f"wrote {out}.json and {out}.md")
  return 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
