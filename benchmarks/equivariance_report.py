"""Measures equivariance errors of every arch x mode x blind x channels, float32 and float64.

Random weights (numpy, variance 1/fan_in; biases, alphas and BatchNorm
statistics random too), tiny widths, odd image sizes. Writes JSON and prints
a markdown table of the worst error per (arch, mode, dtype).

    python benchmarks/equivariance_report.py --out benchmarks/results/equivariance.json
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
PAIRS = ((10.0, 50.0), (0.3, -1.2), (1.7, 0.3))
SIZES = ((37, 45), (1, 1), (9, 200))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="benchmarks/results/equivariance.json")
  args = parser.parse_args()
  jax.config.update("jax_enable_x64", True)
  rows = []
  for dtype, arch, mode, blind, channels in itertools.product(
      (jnp.float32, jnp.float64), TINY, models.MODES, (True, False), (1, 3)):
    module = models.create(arch, mode=mode, blind=blind, channels=channels, **TINY[arch])
    for h, w in SIZES:
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
  files.write_text(args.out, json.dumps({"jax": jax.__version__, "device": str(jax.devices()[0]),
                                         "pairs": PAIRS, "rows": rows}, indent=1))
  print("\n| dtype | arch | mode | NE abs | NE rel | scale abs | scale rel |")
  print("|---|---|---|--:|--:|--:|--:|")
  for (dt, arch, mode), group in itertools.groupby(rows, lambda r: (r["dtype"], r["arch"], r["mode"])):
    g = list(group)
    print(f"| {dt} | {arch} | {mode} | {max(r['ne_max_abs'] for r in g):.1e} | "
          f"{max(r['ne_max_rel'] for r in g):.1e} | {max(r['scale_max_abs'] for r in g):.1e} | "
          f"{max(r['scale_max_rel'] for r in g):.1e} |")


if __name__ == "__main__":
  main()
