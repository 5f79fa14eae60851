"""Measures equivariance errors of every arch x mode x blind x channels, float32 and float64.

Random weights (numpy, variance 1/fan_in; biases, alphas and BatchNorm
statistics random too), tiny widths, odd image sizes. Writes JSON and prints
a markdown table of the worst error per (arch, mode, dtype).

    python benchmarks/equivariance_report.py --out benchmarks/results/equivariance.json
    python benchmarks/equivariance_report.py --out DIR/eq.json --check 1e-5   # exit 1 above 1e-5

``--check REL``: the exit status is 1 when a float32 relative error exceeds
``REL`` where the mode guarantees the property (normalization-equivariance
for norm_equiv and wrapped, scale-equivariance for scale_equiv too), as the
CPU tests assert; the GPU command (benchmarks/gpu.sh) uses it. Matrix products
and convolutions run at "highest" precision (``--precision``): on a GPU XLA's
default rounds their float32 inputs to TF32 (10-bit mantissas), whose errors
are not the construction's. ``--widths pallas``: widths whose inner layers the
Pallas kernel takes (with ``NEDENOISE_GPU_CONV=pallas``, kernels.pallas_conv).
"""

import argparse
import itertools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import equivariance, files, models

TINY = {"fdncnn": dict(features=8, depth=4), "drunet": dict(features=(8, 8, 16, 16), blocks=1),
        "dncnn": dict(features=8, depth=4)}
# The smallest widths whose inner 3x3 layers kernels.pallas_conv takes (16 channel pairs).
PALLAS = {"fdncnn": dict(features=32, depth=4), "drunet": dict(features=(32, 32, 64, 64), blocks=1),
          "dncnn": dict(features=32, depth=4)}
PAIRS = ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3))
SIZES = ((37, 45), (1, 1), (9, 200))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="benchmarks/results/equivariance.json")
  parser.add_argument("--quick", action="store_true",
                      help="float32, the modes that guarantee a property, one odd size (a device check)")
  parser.add_argument("--check", type=float, default=None,
                      help="fail (exit 1) when a guaranteed float32 relative error exceeds this")
  parser.add_argument("--precision", default="highest", choices=["highest", "default"],
                      help="jax_default_matmul_precision (default on a GPU: TF32 convolutions)")
  parser.add_argument("--widths", default="tiny", choices=["tiny", "pallas"])
  args = parser.parse_args()
  jax.config.update("jax_enable_x64", True)
  if args.precision != "default":
    jax.config.update("jax_default_matmul_precision", args.precision)
  widths = TINY if args.widths == "tiny" else PALLAS
  rows = []
  dtypes, modes, sizes = (jnp.float32, jnp.float64), models.MODES, SIZES
  if args.quick:
    dtypes, modes, sizes = (jnp.float32,), ("scale_equiv", "norm_equiv", "wrapped"), SIZES[:1]
  for dtype, arch, mode, blind, channels in itertools.product(dtypes, widths, modes, (True, False), (1, 3)):
    module = models.create(arch, mode=mode, blind=blind, channels=channels, **widths[arch])
    for h, w in sizes:
      rng = np.random.default_rng(h * w)
      x = jnp.asarray(rng.uniform(size=(2, h, w, channels)), dtype)
      sigma = None if blind else jnp.asarray(rng.uniform(0.02, 0.2, size=(2,)), dtype)
      v = equivariance.random_variables(module, x, sigma, seed=h + w)
      fn = jax.jit(lambda x, s=None: module.apply(v, x, s))
      ne = equivariance.equivariance_errors(fn, x, sigma, pairs=PAIRS)
      se = equivariance.equivariance_errors(fn, x, sigma, pairs=[(a, 0.0) for a, _ in PAIRS])
      rows.append({"dtype": jnp.dtype(dtype).name, "arch": arch, "mode": mode, "blind": blind,
                   "channels": channels, "size": [h, w],
                   "ne_max_abs": max(r["max_abs_error"] for r in ne),
                   "ne_max_rel": max(r["rel_error"] for r in ne),
                   "scale_max_abs": max(r["max_abs_error"] for r in se),
                   "scale_max_rel": max(r["rel_error"] for r in se),
                   "magnitude": max(r["magnitude"] for r in ne)})
    print(".", end="", flush=True, file=sys.stderr)
  from nedenoise_jax.kernels import pallas_conv

  files.write_text(args.out, json.dumps({"jax": jax.__version__, "device": str(jax.devices()[0]),
                                         "precision": args.precision, "widths": args.widths,
                                         "gpu_conv": pallas_conv.mode(), "pairs": PAIRS, "rows": rows},
                                        indent=1))
  print("\n| dtype | arch | mode | NE abs | NE rel | scale abs | scale rel |")
  print("|---|---|---|--:|--:|--:|--:|")
  for (dt, arch, mode), group in itertools.groupby(rows, lambda r: (r["dtype"], r["arch"], r["mode"])):
    g = list(group)
    print(f"| {dt} | {arch} | {mode} | {max(r['ne_max_abs'] for r in g):.1e} | "
          f"{max(r['ne_max_rel'] for r in g):.1e} | {max(r['scale_max_abs'] for r in g):.1e} | "
          f"{max(r['scale_max_rel'] for r in g):.1e} |")
  if args.check is not None:
    bad = [r for r in rows if r["dtype"] == "float32" and (
        (r["mode"] in ("norm_equiv", "wrapped") and r["ne_max_rel"] > args.check)
        or (r["mode"] in ("norm_equiv", "wrapped", "scale_equiv") and r["scale_max_rel"] > args.check))]
    for r in bad:
      print(f"FAIL {r['arch']} {r['mode']} blind={r['blind']} channels={r['channels']} size={r['size']}: "
            f"NE rel {r['ne_max_rel']:.2e}, scale rel {r['scale_max_rel']:.2e} > {args.check:g}")
    print(f"equivariance check on {jax.devices()[0].platform}: "
          f"{'FAILED' if bad else 'passed'} (float32 relative errors <= {args.check:g} where guaranteed)")
    return 1 if bad else 0
  return 0


if __name__ == "__main__":
  sys.exit(main())
