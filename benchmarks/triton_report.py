"""The Pallas NE convolution as the GPU will build it, checked on a machine without one.

    pip install --no-deps --target /tmp/cudaplug jax-cuda12-plugin==$JAX jax-cuda12-pjrt==$JAX
    PYTHONPATH=/tmp/cudaplug python benchmarks/triton_report.py --ptxas PATH/ptxas --out DIR

For each case the GPU command (``benchmarks/gpu.sh``) will run, the full-size
model is lowered for CUDA with ``NEDENOISE_GPU_CONV=pallas`` (no GPU
needed: Pallas builds its Triton kernels for compute capability 9.0,
Hopper, when none is present), and every Triton kernel of the lowered
program (forward and kernel gradient, one per distinct shape and dtype) is
compiled here as the GPU's jaxlib would compile it: Triton's pipeline to PTX
by the CUDA plugin's compiler (``jax-cuda12-plugin``, the version of the
installed jax, which runs without a GPU), then, with ``--ptxas`` (a CUDA
toolkit's, or the one in a ``triton`` wheel), PTX to SASS for ``sm_90a``.

``DIR/triton_report.json`` and ``.md`` list, per kernel: the grid, warps
and pipeline stages, shared memory, registers per thread, spills, the
tensor-core instructions in the PTX (``wgmma`` on Hopper, ``mma.sync``
otherwise) and the occupancy the registers and shared memory allow on an
H100/H200 SM. It exits 1 when a kernel does not compile, spills, or asks
for more shared memory than an SM has: what a device run would meet first,
found before device time is spent. Timing still needs the GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

# The cases of benchmarks/gpu.sh (bench.py's tasks at GPU sizes) and the defaults' training.
CASES = (
    # (arch, task, batch, side, channels, dtype)
    ("fdncnn", "train", 128, 64, 1, "float32"),
    ("fdncnn", "train", 128, 64, 1, "bfloat16"),
    ("fdncnn", "train", 128, 64, 3, "float32"),
    ("fdncnn", "infer", 1, 512, 1, "float32"),
    ("fdncnn", "infer", 1, 1024, 1, "float32"),
    ("fdncnn", "infer", 8, 256, 1, "bfloat16"),
    ("drunet", "train", 16, 128, 1, "float32"),
    ("drunet", "train", 16, 128, 1, "bfloat16"),
    ("drunet", "infer", 1, 512, 1, "float32"),
    ("drunet", "infer", 1, 1024, 1, "float32"),
    ("drunet", "infer", 1, 1024, 1, "bfloat16"),
)

# Hopper (sm_90, H100 and H200): per SM.
SM = {"registers": 65536, "shared_bytes": 233472, "shared_per_block": 232448, "warps": 64, "blocks": 32}


def capture_kernels(fn, *args) -> list[dict]:
  """The Triton kernels of ``jax.jit(fn)`` lowered for CUDA: name, module bytes, warps, stages, grid.

  jaxlib <= 0.10.2 puts the module in the custom call's backend config for XLA
  to compile; later ones compile it at lowering (``triton.compile``): both are
  read where they pass.
  """
  import jax
  from jax._src.pallas.triton import pallas_call_registration as reg

  found = []
  custom_call, compile_ = reg.mlir.custom_call, reg.triton.compile

  def on_custom_call(*a, backend_config=None, **kw):
    if isinstance(backend_config, dict) and "ir" in backend_config:
      found.append({"name": backend_config["name"].value, "ir": backend_config["ir"].value_bytes,
                    "operands": [str(o.type) for o in kw["operands"]],
                    "num_warps": int(backend_config["num_warps"].value),
                    "num_stages": int(backend_config["num_stages"].value),
                    "grid": [int(backend_config[g].value) for g in ("grid_x", "grid_y", "grid_z")]})
    return custom_call(*a, backend_config=backend_config, **kw)

  def on_compile(platform, module, arch, *, num_warps, num_ctas, num_stages):
    found.append({"name": "?", "ir": bytes(module), "operands": None, "num_warps": num_warps,
                  "num_stages": num_stages, "grid": None})
    return compile_(platform, module, arch, num_warps=num_warps, num_ctas=num_ctas, num_stages=num_stages)

  reg.mlir.custom_call, reg.triton.compile = on_custom_call, on_compile
  try:
    jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
  finally:
    reg.mlir.custom_call, reg.triton.compile = custom_call, compile_
  return found


def case_program(arch, task, batch, side, channels, dtype):
  """(fn, args): the case's inference, or its training gradient (MSE), on abstract inputs."""
  import jax
  import jax.numpy as jnp

  from nedenoise_jax import models

  module = models.create(arch, mode="norm_equiv", blind=False, channels=channels, dtype=jnp.dtype(dtype))
  x = jax.ShapeDtypeStruct((batch, side, side, channels), jnp.float32)
  sigma = jax.ShapeDtypeStruct((batch,), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), x, sigma)
  if task == "infer":
    return (lambda v, x, s: module.apply(v, x, s)), (variables, x, sigma)

  def loss(v, x, s):
    return jnp.mean((module.apply(v, x, s).astype(jnp.float32) - x) ** 2)

  return jax.grad(loss), (variables, x, sigma)


def occupancy(registers: int, shared: int, warps: int) -> int:
  """Warps per SM the registers (allocated per warp in units of 256) and shared memory allow."""
  per_warp = -(-registers * 32 // 256) * 256
  blocks = min(SM["blocks"], SM["warps"] // warps, SM["registers"] // (per_warp * warps),
               SM["shared_bytes"] // max(shared, 1))
  return blocks * warps


def compile_kernel(kernel: dict, ptxas: str | None) -> dict:
  from jax._src.lib import triton

  r = {k: kernel[k] for k in ("name", "operands", "num_warps", "num_stages", "grid")}
  try:
    result = triton.compile("cuda", kernel["ir"], "9.0", num_warps=kernel["num_warps"], num_ctas=1,
                            num_stages=kernel["num_stages"])
  except Exception as e:  # what the GPU's jaxlib would raise at lowering
    r["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
    return r
  ptx = result.asm
  r["shared_bytes"] = int(result.smem_bytes)
  r["target"] = (re.search(r"^\.target\s+(\S+)", ptx, re.M) or [None, "?"])[1]
  r["tensor_core"] = sorted({m for m in re.findall(r"(wgmma\.mma_async\S*|mma\.sync\S*)", ptx)})
  if ptxas:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
      f.write(ptx)
      f.flush()
      p = subprocess.run([ptxas, f"-arch={r['target']}", "-v", f.name, "-o", os.devnull],
                         capture_output=True, text=True)
    if p.returncode:
      r["error"] = f"ptxas: {p.stderr[-2000:]}"
      return r
    info = p.stderr
    r["registers"] = int(re.search(r"Used (\d+) registers", info)[1])
    r["spill_bytes"] = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", info))
    r["stack_bytes"] = int(re.search(r"(\d+) bytes stack frame", info)[1])
    r["warps_per_sm"] = occupancy(r["registers"], r["shared_bytes"], r["num_warps"])
  return r


def problems(r: dict) -> list[str]:
  out = [r["error"]] if "error" in r else []
  if r.get("spill_bytes"):
    out.append(f"{r['spill_bytes']} bytes of register spills")
  if r.get("shared_bytes", 0) > SM["shared_per_block"]:
    out.append(f"{r['shared_bytes']} bytes of shared memory, more than an SM's {SM['shared_per_block']}")
  return out


def operands(r: dict) -> str:
  """``tensor<8192x64xf32>, tensor<9x32x64xf32>`` -> ``8192x64 f32, 9x32x64 f32``."""
  if not r.get("operands"):
    return "?"
  return ", ".join(re.sub(r"tensor<(.*)x([a-z]+\d+)>", r"\1 \2", t) for t in r["operands"])


def markdown(rows: list[dict]) -> str:
  lines = ["| case | kernel | operands | grid | warps / stages | shared (KiB) | registers | spills (B) | "
           "warps / SM | tensor cores |", "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    head = f"| {', '.join(r['cases'])} | {r['name']} | {operands(r)} |"
    if "error" in r:
      lines.append(f"{head} FAILED: {r['error'][:200]} |||||||")
      continue
    grid = "x".join(map(str, r["grid"])) if r["grid"] else "?"
    lines.append(f"{head} {grid} | {r['num_warps']} / {r['num_stages']} | {r['shared_bytes'] / 1024:.0f} | "
                 f"{r.get('registers', '?')} | {r.get('spill_bytes', '?')} | {r.get('warps_per_sm', '?')} | "
                 f"{', '.join(r['tensor_core']) or 'none'} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ptxas", default=None, help="a ptxas for PTX -> SASS (registers, spills); without it "
                 "only Triton's pipeline to PTX runs")
  p.add_argument("--precision", default="default", choices=("default", "high", "highest"),
                 help="jax_default_matmul_precision, as bench.py's (the kernels' products: TF32 by "
                 "default, three TF32 products at highest; pallas_conv._dot_algorithm)")
  p.add_argument("--cases", default=None, help="comma-separated indices into CASES (default all)")
  p.add_argument("--out", default=os.path.join(HERE, "results", "triton_report"))
  args = p.parse_args(argv)
  # Read when the backends start: the CUDA plugin registers its Triton compiler and makes no GPU client.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

  import jax
  from jax._src.lib import triton

  from nedenoise_jax import files
  from nedenoise_jax.kernels import pallas_conv

  if args.precision != "default":
    jax.config.update("jax_default_matmul_precision", args.precision)
  jax.devices()  # initializes the backends, and with them the CUDA plugin's Triton compiler
  if not triton.has_compilation_handler("cuda"):
    raise SystemExit("triton_report: no Triton compiler for CUDA: install jax-cuda12-plugin and "
                     f"jax-cuda12-pjrt {jax.__version__} (see this file's docstring)")
  os.environ[pallas_conv.ENV] = "pallas"
  cases = CASES if args.cases is None else [CASES[int(i)] for i in args.cases.split(",")]
  kernels: dict = {}
  for case in cases:
    label = "{} {} {}x{}x{}x{} {}".format(*case[:3], case[3], case[3], *case[4:])
    fn, inputs = case_program(*case)
    found = capture_kernels(fn, *inputs)
    print(f"{label}: {len(found)} Triton kernels", flush=True)
    for k in found:
      key = hashlib.sha256(k["ir"]).hexdigest()
      kernels.setdefault(key, {**k, "cases": []})["cases"].append(label)
  rows, failed = [], 0
  for k in kernels.values():
    r = {**compile_kernel(k, args.ptxas), "cases": k["cases"]}
    bad = problems(r)
    failed += bool(bad)
    print(f"{r['name']} {r['grid']}: " + ("; ".join(bad) if bad else
          f"{r['shared_bytes']} B shared, {r.get('registers', '?')} registers, "
          f"{r.get('spill_bytes', '?')} B spills"), flush=True)
    rows.append(r)
  ptxas = args.ptxas and subprocess.run([args.ptxas, "--version"], capture_output=True, text=True).stdout
  results = {"rows": rows, "environment": {"jax": jax.__version__, "arch": "sm_90 (H100/H200)",
                                           "precision": args.precision,
                                           "ptxas": ptxas and re.search(r"release [^\n]*", ptxas)[0]}}
  md = markdown(rows)
  files.write_text(args.out + ".json", json.dumps(results, indent=1))
  files.write_text(args.out + ".md", md)
  print(md)
  print(f"wrote {args.out}.json and {args.out}.md; {len(rows)} kernels, {failed} with problems")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
