"""Speed and memory of the full-size models in every mode: inference and one training step.

python benchmarks/bench.py                      # CPU: writes benchmarks/results/bench_cpu.{json,md}
python benchmarks/bench.py --dtype bfloat16     # e.g. on a GPU (runs unchanged there)

For FDnCNN and DRUNet (full size, non-blind, gray) in each mode: inference on
1x256x256 and 1x512x512 (tasks ``inferN``, or ``inferBxN`` for a batch of B);
one training step (forward + backward + Adam, jit over a ("data",) mesh of all
local devices, state donated) on 16x64x64 (FDnCNN) and 4x128x128 (DRUNet), or
the shapes of ``--train_shapes`` (e.g. ``fdncnn=128x64,drunet=16x128``, the GPU
sizes of benchmarks/gpu.sh). ``--precision highest`` makes float32
convolutions full float32 (no TF32 on GPUs); ``--tiny`` uses small widths,
for rehearsing a command on the CPU. Compile time is measured apart from run time;
run time is the median of ``--repeats`` runs after a warm-up. GFLOP/s come
from an analytical count of the convolutions (2*out_pixels*kh*kw*cin*cout;
a training step counted as 3x the forward). Peak memory: XLA's buffer
assignment of the compiled program (arguments + outputs + temporaries), and on
GPUs the allocator's peak. All modes are measured in the same run, so the
ratios to ``ordinary`` are comparable even on a noisy machine: the table
gives the ratio of the medians, and the median of the per-round ratios with
a 95% interval (:func:`paired_ratio`).

A mode may name a convolution path after ``@``: ``norm_equiv@pallas`` is
norm_equiv traced with ``NEDENOISE_GPU_CONV=pallas`` (the Pallas NE
convolution of kernels.pallas_conv on CUDA GPUs; ``@interpret`` for a CPU
rehearsal), timed in the same interleaved rounds as the other modes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# The authors' PyTorch code on the project's earlier 2-core AVX2 CPU (2 threads), medians in seconds,
# as the performance issue quotes them. On another machine, time it there: bench_reference.py.
REFERENCE_CPU = {
    ("fdncnn", "train", "ordinary"): 1.85, ("fdncnn", "train", "norm_equiv"): 2.1,
    ("drunet", "train", "ordinary"): 5.6, ("drunet", "train", "norm_equiv"): 6.1,
    ("fdncnn", "infer256", "ordinary"): 0.70, ("fdncnn", "infer256", "norm_equiv"): 0.93,
    ("drunet", "infer256", "ordinary"): 1.67, ("drunet", "infer256", "norm_equiv"): 1.84,
}
TRAIN_SHAPES = {"fdncnn": (16, 64), "drunet": (4, 128)}
# Rehearsal widths: the smallest whose inner layers the Pallas kernel takes (16 channel pairs).
TINY = {"fdncnn": dict(features=32, depth=4), "drunet": dict(features=(32, 32, 64, 64), blocks=1)}


CONV_PATHS = ("xla", "pallas", "pallas_fwd", "interpret")  # NEDENOISE_GPU_CONV values (kernels.pallas_conv.MODES)


def parse_mode(spec: str) -> tuple[str, str | None]:
  """``"norm_equiv@pallas"`` -> ("norm_equiv", "pallas"); ``"ordinary"`` -> ("ordinary", None)."""
  mode, _, path = spec.partition("@")
  if path and path not in CONV_PATHS:
    raise ValueError(f"mode {spec!r}: unknown convolution path {path!r}; expected one of {CONV_PATHS}")
  return mode, path or None


@contextlib.contextmanager
def conv_path(path: str | None):
  """``NEDENOISE_GPU_CONV=path`` while a program is built and traced (then as before)."""
  if path is None:
    yield
    return
  old = os.environ.get("NEDENOISE_GPU_CONV")
  os.environ["NEDENOISE_GPU_CONV"] = path
  try:
    yield
  finally:
    if old is None:
      del os.environ["NEDENOISE_GPU_CONV"]
    else:
      os.environ["NEDENOISE_GPU_CONV"] = old


def parse_task(task: str) -> tuple[int, int]:
  """``"infer512"`` -> (1, 512); ``"infer8x256"`` -> (8, 256): batch and side of an inference task."""
  spec = task[len("infer"):]
  batch, _, side = spec.rpartition("x")
  return int(batch or 1), int(side)


def parse_train_shapes(text: str) -> dict:
  """``"fdncnn=128x64,drunet=16x128"`` -> {arch: (batch, patch)} over the defaults."""
  shapes = dict(TRAIN_SHAPES)
  for item in filter(None, text.split(",")):
    arch, _, spec = item.partition("=")
    batch, _, patch = spec.partition("x")
    shapes[arch] = (int(batch), int(patch))
  return shapes


def cpu_model() -> str:
  """The CPU's model name, family and vector extensions (AVX2 / AVX-512), from /proc/cpuinfo."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().splitlines()
  except OSError:
    return platform.processor() or platform.machine()
  fields: dict = {}
  for ln in lines:  # the first processor's entries
    key, _, value = ln.partition(":")
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get("flags", "").split())
  ext = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
  return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, {ext})"


def conv_flops(module, x, sigma) -> int:
  """Analytical forward FLOPs of every convolution in ``module`` (multiply-adds x 2)."""
  import flax.linen as nn
  import jax
  import numpy as np

  from nedenoise_jax import layers

  total = [0]

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, layers.Conv) and context.method_name == "__call__":
      kh, kw = context.module.kernel_size
      cin = args[0].shape[-1]
      total[0] += 2 * int(np.prod(out.shape)) * kh * kw * cin
    return out

  variables = jax.eval_shape(module.init, jax.random.key(0), x, sigma)
  with nn.intercept_methods(count):
    jax.eval_shape(module.apply, variables, x, sigma)
  return total[0]


def _time_interleaved(runs: list, repeats: int, block=None) -> list[list[float]]:
  """Times each of ``runs`` ``repeats`` times, one of each per round.

  Interleaving the modes makes their ratios robust to the machine's slow
  drifts (other processes, thermal state), which a block of repeats per mode
  would attribute to one mode. ``block`` waits for a result (default
  ``jax.block_until_ready``; the identity for eager PyTorch).
  """
  if block is None:
    import jax

    block = jax.block_until_ready
  for fn in runs:
    block(fn())  # warm-up
  times = [[] for _ in runs]
  for _ in range(repeats):
    for fn, ts in zip(runs, times):
      t = time.perf_counter()
      block(fn())
      ts.append(time.perf_counter() - t)
  return times


def repeat_times(fn, repeats: int, block=None) -> list[float]:
  """``repeats`` timings (seconds) of ``fn()`` after one warm-up call, which compiles."""
  return _time_interleaved([fn], repeats, block)[0]


def paired_ratio(times: list[float], base_times: list[float]) -> dict:
  """Median of the per-round ratios ``times[i] / base_times[i]``, with a 95% interval.

  The rounds are interleaved (:func:`_time_interleaved`), so a ratio within
  one round cancels the machine's drift, which the ratio of two medians
  keeps. The interval is the distribution-free one for a median from order
  statistics (binomial, coverage at least 95%); ``None`` with fewer than 6
  rounds, where none exists.
  """
  ratios = sorted(t / b for t, b in zip(times, base_times))
  n = len(ratios)
  if n == 0:
    raise ValueError("paired_ratio needs at least one round")
  k, cdf = 0, 0.0  # largest k with P(Binomial(n, 1/2) <= k - 1) <= 0.025
  while True:
    cdf += math.comb(n, k) / 2 ** n
    if cdf > 0.025:
      break
    k += 1
  low, high = (ratios[k - 1], ratios[n - k]) if k else (None, None)
  return {"median": statistics.median(ratios), "ci95": None if low is None else [low, high]}


def ratios_to_ordinary(times: list[float], base_times: list[float]) -> dict:
  """A mode's ``ratio_to_ordinary`` (of the medians) and ``paired_ratio_to_ordinary``."""
  return {"ratio_to_ordinary": statistics.median(times) / statistics.median(base_times),
          "paired_ratio_to_ordinary": paired_ratio(times, base_times)}


def _memory(compiled) -> dict:
  out = {}
  try:
    m = compiled.memory_analysis()
    out["xla_bytes"] = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                           - getattr(m, "alias_size_in_bytes", 0))
    out["xla_temp_bytes"] = int(m.temp_size_in_bytes)
  except Exception:  # not every backend reports it
    pass
  return out


def _device_peak() -> dict:
  import jax

  stats = jax.local_devices()[0].memory_stats() or {}
  return {"device_peak_bytes": int(stats["peak_bytes_in_use"])} if "peak_bytes_in_use" in stats else {}


def bench_inference(arch, mode, size, dtype, repeats, prepared=False, batch=1, tiny=False):
  mode, path = parse_mode(mode)
  with conv_path(path):
    return _bench_inference(arch, mode, size, dtype, repeats, prepared, batch, tiny)


def _bench_inference(arch, mode, size, dtype, repeats, prepared, batch, tiny):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from nedenoise_jax import models, xla_options

  module = models.create(arch, mode=mode, blind=False, channels=1, dtype=jnp.dtype(dtype),
                         **(TINY[arch] if tiny else {}))
  x = jnp.asarray(np.random.default_rng(0).random((batch, size, size, 1)), jnp.float32)
  sigma = jnp.full((batch,), 25 / 255, jnp.float32)
  variables = xla_options.jit(module.init)(jax.random.key(0), x, sigma)
  if prepared:  # constrained kernels formed once, outside the timed calls
    module, variables = models.prepare_inference(module, variables)
  fn = xla_options.jit(lambda v, x, s: module.apply(v, x, s))
  t = time.perf_counter()
  compiled = fn.lower(variables, x, sigma).compile()
  compile_s = time.perf_counter() - t
  flops = conv_flops(module, x, sigma)

  def run():
    return compiled(variables, x, sigma)

  run.compiled = compiled  # for gpu_profile.py's HLO
  return run, {"compile_s": compile_s, "gflop": flops / 1e9, **_memory(compiled)}


def bench_train(arch, mode, dtype, repeats, shapes=TRAIN_SHAPES, tiny=False):
  mode, path = parse_mode(mode)
  with conv_path(path):
    return _bench_train(arch, mode, dtype, repeats, shapes, tiny)


def _bench_train(arch, mode, dtype, repeats, shapes, tiny):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  from nedenoise_jax.training import config as config_lib
  from nedenoise_jax import xla_options
  from nedenoise_jax.training import loop as train

  batch, patch = shapes[arch]
  c = config_lib.base_config(arch)
  c.model.mode, c.model.blind, c.model.dtype = mode, False, dtype
  for key, value in (TINY[arch] if tiny else {}).items():
    c.model[key] = value
  c.train.batch_size, c.train.patch_size = batch, patch
  module, tx = train.create_model(c), train.create_optimizer(c)
  mesh = train.make_mesh()
  train.check_batch(batch, mesh)
  rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = xla_options.jit(functools.partial(train.init_state, module, tx, config=c), out_shardings=rep)(
      jax.random.key(0))
  rng = np.random.default_rng(0)
  data = {"clean": jax.device_put(rng.random((batch, patch, patch, 1), np.float32), shard),
          "sigma": jax.device_put(np.full((batch,), 25 / 255, np.float32), shard)}
  step = xla_options.jit(functools.partial(train.train_step, module=module, tx=tx, loss="mse", blind=False),
                 in_shardings=(rep, shard), out_shardings=(rep, rep), donate_argnums=0)
  t = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t
  holder = [state]

  def run():
    holder[0], m = compiled(holder[0], data)
    return m["loss"]

  run.compiled = compiled  # for gpu_profile.py's HLO
  flops = 3 * conv_flops(module, jnp.zeros((batch, patch, patch, 1)), jnp.zeros((batch,)))
  return run, {"compile_s": compile_s, "gflop": flops / 1e9, "devices": int(mesh.devices.size),
               **_memory(compiled)}


def markdown(results: dict) -> str:
  rows = results["rows"]
  ref = results.get("reference") or {}
  lines = ["| model | task | mode | run (s) | / ordinary | per round / ordinary (95% interval) | GFLOP/s | "
           "compile (s) | XLA buffers (MiB) | reference (s) |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['arch']} | {r['task']} | {r['mode']} | failed: {r['error'][:120]} |||||||")
      continue
    base = next((b for b in rows if b["arch"] == r["arch"] and b["task"] == r["task"]
                 and b["mode"] == "ordinary" and "error" not in b), None)
    ratio = paired = ""
    if base:
      ratios = ratios_to_ordinary(r["times_s"], base["times_s"])
      ratio = f"{ratios['ratio_to_ordinary']:.3f}"
      pr = ratios["paired_ratio_to_ordinary"]
      if r is not base:
        paired = f"{pr['median']:.3f}" + (f" ({pr['ci95'][0]:.3f}–{pr['ci95'][1]:.3f})" if pr["ci95"] else "")
    mem = r.get("xla_bytes")  # this program's arguments + outputs + temporaries
    refv = ref.get(f"{r['arch']}/{r['task']}/{r['mode']}")
    lines.append(f"| {r['arch']} | {r['task']} | {r['mode']} | {r['median_s']:.4f} | {ratio} | {paired} | "
                 f"{r['gflops_per_s']:.1f} | {r['compile_s']:.1f} | "
                 f"{'' if mem is None else f'{mem / 2**20:.0f}'} | {'' if refv is None else f'{refv:.2f}'} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--archs", default="fdncnn,drunet")
  p.add_argument("--modes", default="ordinary,scale_equiv,norm_equiv,wrapped")
  p.add_argument("--tasks", default="infer256,infer512,train")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--train_shapes", default="", help="batch x patch per arch, e.g. fdncnn=128x64,drunet=16x128")
  p.add_argument("--precision", default="default", choices=["default", "highest"],
                 help="jax_default_matmul_precision: highest = XLA's float32 convolutions without TF32, "
                 "and the Pallas kernels' three TF32 products (@pallas)")
  p.add_argument("--tiny", action="store_true", help="small widths: rehearse a command on the CPU")
  p.add_argument("--prepared", action="store_true",
                 help="inference with models.prepare_inference (each constrained kernel formed once, "
                      "not per call)")
  p.add_argument("--cpu_devices", type=int, default=-1,
                 help="CPU only: JAX devices to split the CPU into (-1: as train.py, see train.configure_cpu_devices)")
  p.add_argument("--out", default=None, help="output stem (default benchmarks/results/bench_<platform>)")
  p.add_argument("--reference", default=None,
                 help="JSON from bench_reference.py (the authors' PyTorch code timed on this machine) "
                      "for the reference column; default on a CPU: the medians the performance issue "
                      "quotes, measured on the project's earlier AVX2 machine")
  args = p.parse_args(argv)
  args.reference_times = {"/".join(k): v for k, v in REFERENCE_CPU.items()}
  args.reference_env = {"source": "performance issue, earlier 2-core AVX2 machine, 2 threads"}
  if args.reference:
    with open(args.reference) as f:
      ref = json.load(f)
    args.reference_times, args.reference_env = ref["reference"], {"source": args.reference,
                                                                  **ref.get("environment", {})}

  import jax

  from nedenoise_jax import xla_options
  from nedenoise_jax.training import loop as train

  shapes = parse_train_shapes(args.train_shapes)
  if args.precision != "default":
    jax.config.update("jax_default_matmul_precision", args.precision)
  if args.cpu_devices:
    train.configure_cpu_devices(args.cpu_devices, math.gcd(*(shapes[a][0] for a in args.archs.split(","))))
  backend = jax.default_backend()
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 f"bench_{backend}{'_bf16' if args.dtype == 'bfloat16' else ''}")
  rows = []
  for arch in args.archs.split(","):
    for task in args.tasks.split(","):
      modes, runs, infos = [], [], []
      for mode in args.modes.split(","):
        try:
          if task == "train":
            run, info = bench_train(arch, mode, args.dtype, args.repeats, shapes, args.tiny)
            info["shape"] = [shapes[arch][0], shapes[arch][1], shapes[arch][1], 1]
          else:
            batch, side = parse_task(task)
            run, info = bench_inference(arch, mode, side, args.dtype, args.repeats, args.prepared,
                                        batch, args.tiny)
            info["shape"] = [batch, side, side, 1]
        except Exception as e:  # e.g. a kernel a backend refuses: the other modes are still timed
          error = f"{type(e).__name__}: {str(e)[:4000]}"
          print(f"{arch:7s} {task:9s} {mode:12s} FAILED {error[:1000]}", flush=True)
          rows.append({"arch": arch, "task": task, "mode": mode, "error": error})
          continue
        modes.append(mode)
        runs.append(run)
        infos.append(info)
      if not runs:
        continue
      all_times = _time_interleaved(runs, args.repeats)
      base = all_times[modes.index("ordinary")] if "ordinary" in modes else None
      for mode, info, times in zip(modes, infos, all_times):
        med = statistics.median(times)
        r = {**info, "median_s": med, "times_s": times, "gflops_per_s": info["gflop"] / med,
             **_device_peak(), "arch": arch, "task": task, "mode": mode}
        if base is not None:
          r.update(ratios_to_ordinary(times, base))
        rows.append(r)
        print(f"{arch:7s} {task:9s} {mode:12s} {med:.4f} s  {r['gflops_per_s']:7.1f} GFLOP/s  "
              f"compile {r['compile_s']:.1f} s", flush=True)
      del runs
      _write(out, rows, backend, args)  # after every task: a run cut short keeps what it measured
  print(markdown(_write(out, rows, backend, args)))
  print(f"wrote {out}.json and {out}.md")
  return 0


def _write(out, rows, backend, args) -> dict:
  import jax

  results = {
      "rows": rows,
      "environment": {"backend": backend, "devices": [str(d) for d in jax.devices()],
                      "jax": jax.__version__, "dtype": args.dtype, "repeats": args.repeats,
                      "precision": args.precision, "tiny": bool(args.tiny),
                      "prepared_inference": bool(args.prepared),
                      "machine": platform.machine(), "cpu_count": os.cpu_count(),
                      "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"),
                      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")},
      # The quoted CPU medians mean nothing on another backend; a --reference file timed on
      # this machine applies wherever it was given.
      "reference": args.reference_times if backend == "cpu" or args.reference else {},
      "reference_environment": args.reference_env if backend == "cpu" or args.reference else {},
  }
  write_results(out, results, markdown(results))
  return results


def write_results(out: str, results: dict, md: str) -> None:
  """Writes ``out.json`` and ``out.md`` atomically (:func:`nedenoise_jax.files.write_text`)."""
  from nedenoise_jax import files

  for ext, text in ((".json", json.dumps(results, indent=1)), (".md", md)):
    files.write_text(out + ext, text)


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
