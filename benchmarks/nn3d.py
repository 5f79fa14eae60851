"""Time of one NN3D iteration: the guided nonlocal filter and the CNN pass it adds.

python benchmarks/nn3d.py --out benchmarks/results/nn3d.json

The shipped NE gray FDnCNN (12 x 64) on 256x256 and 481x321 images; each
timing is the median of 5 runs after a compiling one. One NN3D iteration =
one nonlocal filter (11x11 search window, 5x5 patches) + one CNN pass; K
iterations cost the CNN's time plus K of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import cpu_model, repeat_times  # noqa: E402  (the one CPU description and timing loop)


def _median_time(fn, *args, repeats: int = 5) -> float:
  return statistics.median(repeat_times(lambda: fn(*args), repeats))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "nn3d.json"))
  args = p.parse_args(argv)
  import jax
  import jax.numpy as jnp
  import numpy as np

  import nedenoise_jax
  from nedenoise_jax.nn import nonlocal_filter as nl

  module, variables = nedenoise_jax.load("pretrained:gray-norm_equiv")
  rows = []
  for h, w in ((256, 256), (321, 481)):
    y = jnp.asarray(np.random.default_rng(0).random((1, h, w, 1)), jnp.float32)
    cnn = jax.jit(lambda y: module.apply(variables, y))
    nlm = jax.jit(lambda y, g: nl.nonlocal_means(y, g, nl.mad_sigma(y)))
    t_cnn, t_nlm = _median_time(cnn, y), _median_time(nlm, y, y)
    full = {}
    for k in (1, 2, 3):
      wrapped, wv = nl.wrap(module, variables, iterations=k)
      full[k] = _median_time(jax.jit(lambda y: wrapped.apply(wv, y)), y)
    rows.append({"image": f"{w}x{h}", "cnn_s": t_cnn, "nonlocal_filter_s": t_nlm,
                 "per_iteration_s": t_cnn + t_nlm, "nn3d_total_s": {str(k): v for k, v in full.items()}})
  result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "jax": jax.__version__, "model": "pretrained:gray-norm_equiv",
            "filter": "search 11x11, patch 5x5", "rows": rows}
  from nedenoise_jax import files

  files.write_text(args.out, json.dumps(result, indent=1))
  print(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
