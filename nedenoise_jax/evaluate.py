"""Evaluate denoisers on data sources over a range of noise levels (the command line).

nedenoise evaluate --model pretrained:gray-norm_equiv --model runs/x \\
    --data folder:PATH/TO/set12 --sigmas 5,15,25,50 --out results/
python -m nedenoise_jax.evaluate ...   (the same)

Every model sees the same noisy images: the noise of image ``i`` at ``sigma`` is
drawn from ``numpy.random.default_rng([seed, round(100 * sigma), i])``. Blind
models get no sigma; non-blind ones the true sigma, or ``--model_sigma`` (a
fixed, possibly mismatched level). PSNR is computed after clipping to [0, 1].
Writes ``results.json``, ``results.csv``, ``results.md`` and
``psnr_vs_sigma.png`` (one curve per model, the training range shaded). The
loop itself is :mod:`nedenoise_jax.evaluation.evaluate`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import jax

from nedenoise_jax import loading
from nedenoise_jax.data import DataError
from nedenoise_jax.evaluation import evaluate as evaluation
from nedenoise_jax.evaluation.evaluate import Model, evaluate, markdown_table, write_results  # noqa: F401 (the API beside the command)
from nedenoise_jax.io import weights
from nedenoise_jax.loading import model_name
from nedenoise_jax.nn import models


def load_model(spec: str, name: Optional[str] = None) -> Model:
  """A pretrained name, a weights file or a training workdir, with its training range."""
  module, variables = loading.load_cached(spec)
  config = None
  path = loading.resolve(spec)
  if os.path.isdir(path):
    for candidate in (os.path.join(path, "config.json"), os.path.join(path, "..", "..", "config.json")):
      if os.path.isfile(candidate):
        with open(candidate) as f:
          config = json.load(f)
        break
  else:
    header, _ = weights.read_weights(path)
    config = header.get("metadata", {}).get("config")
  return Model(name=name or model_name(spec), spec=spec, module=module, variables=variables,
               description=models.describe(module), train_sigma=evaluation.training_range(config))


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse

  p = argparse.ArgumentParser(prog="python -m nedenoise_jax.evaluate", description=__doc__.split("\n\n")[0])
  p.add_argument("--model", action="append", required=True,
                 help="pretrained:NAME, a weights file or a training workdir (repeatable); NAME=SPEC sets "
                      "the display name")
  p.add_argument("--data", action="append", required=True,
                 help="data source: folder:PATH, builtin:NAME or tfds:NAME[:SPLIT] (repeatable)")
  p.add_argument("--sigmas", default="5,10,15,25,35,50,75,100", help="noise levels, 0-255 scale")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--seed", type=int, default=0, help="noise seed (same noise for every model)")
  p.add_argument("--model_sigma", type=float, default=None,
                 help="sigma given to non-blind models instead of the true one (mismatch studies)")
  p.add_argument("--max_images", type=int, default=0, help="use the first N images of each source (0: all)")
  p.add_argument("--no_plot", action="store_true")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  # Full float32 convolutions everywhere (no TF32 on GPUs), so a table computed on
  # one machine is reproduced on another to 0.01 dB.
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    sigmas = evaluation.parse_sigmas(args.sigmas)
    model_list = []
    for item in args.model:
      name, eq, spec = item.partition("=")
      if not eq or os.path.exists(item) or item.startswith(weights.PRETRAINED_PREFIX):
        name, spec = None, item
      model_list.append(load_model(spec, name))
    names = [m.name for m in model_list]
    if len(set(names)) != len(names):
      raise ValueError(f"two models share a display name in {names}; name them with --model NAME=SPEC")
    results = evaluate(model_list, args.data, sigmas, seed=args.seed, model_sigma=args.model_sigma,
                       max_images=args.max_images, progress=not args.no_progress)
  except (ValueError, FileNotFoundError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = evaluation.write_results(results, args.out, make_plot=not args.no_plot)
  print(evaluation.markdown_table(results))
  for k, v in paths.items():
    print(f"{k}: {v}")
  return 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
