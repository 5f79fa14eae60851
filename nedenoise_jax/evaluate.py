"""Evaluate denoisers on data sources over a range of noise levels (the command line).

nedenoise evaluate --model pretrained:gray-norm_equiv --model runs/x \\
    --data folder:PATH/TO/set12 --sigmas 5,15,25,50 --out results/
python -m nedenoise_jax.evaluate ...   (the same)

Every model sees the same noisy images: the noise of image ``i`` at ``sigma`` is
drawn from ``numpy.random.default_rng([seed, round(100 * sigma), i])``
(Gaussian; ``--noise KIND`` draws another kind of :mod:`nedenoise_jax.noise`
at each level, its parameters set with ``--noise_param KEY=VALUE``). Blind
models get no sigma; non-blind ones the true map, or ``--model_sigma`` (a
fixed, possibly mismatched level). ``--map_scales 0.5,1,2`` adds the
wrong-map sweep: the map a model is given (a blind CBDNet: its estimate)
multiplied by each factor. PSNR is computed after clipping to [0, 1].
Writes ``results.json``, ``results.csv``, ``results.md``,
``psnr_vs_sigma.png`` (one curve per model, the training range shaded) and,
with a sweep, ``psnr_vs_map_scale.png``. The loop itself is
:mod:`nedenoise_jax.evaluation.evaluate`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import jax

from nedenoise_jax import files, loading, noise
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


_NOISE_PARAMS = {"patterns": str, "gamma": float, "demosaic": lambda v: v.lower() in ("1", "true", "yes"),
                 "jpeg_quality": int}


def noise_from_args(kind: str, params: Sequence[str]) -> noise.NoiseModel:
  """``--noise KIND --noise_param KEY=VALUE ...`` -> a noise model (levels come from ``--sigmas``)."""
  kw: dict = {"kind": kind}
  for item in params:
    key, eq, value = item.partition("=")
    if not eq or key not in _NOISE_PARAMS:
      raise ValueError(f"--noise_param {item!r}: expected KEY=VALUE with KEY one of {tuple(_NOISE_PARAMS)}")
    try:
      kw[key] = _NOISE_PARAMS[key](value)
    except ValueError:
      raise ValueError(f"--noise_param {item!r}: bad value for {key}") from None
  return noise.from_config(kw)


def nn3d_variants(model_list: Sequence[Model], text: str) -> list[Model]:
  """``--nn3d 1,2``: each model inside NN3D with that many iterations, named ``NAME+nn3dK``."""
  from nedenoise_jax.nn import nonlocal_filter

  try:
    counts = [int(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise ValueError(f"--nn3d={text!r}: expected comma-separated iteration counts") from None
  if any(k < 1 for k in counts):
    raise ValueError(f"--nn3d={text!r}: expected iteration counts >= 1")
  out = []
  for k in counts:
    for m in model_list:
      module, variables = nonlocal_filter.wrap(m.module, m.variables, iterations=k)
      out.append(Model(name=f"{m.name}+nn3d{k}", spec=m.spec, module=module, variables=variables,
                       description=m.description, train_sigma=m.train_sigma, extra={"nn3d": k}))
  return out


def parse_scales(text: str) -> list[float]:
  try:
    values = [float(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise ValueError(f"--map_scales={text!r}: expected comma-separated positive factors") from None
  if any(not (v > 0) or v == float("inf") for v in values):
    raise ValueError(f"--map_scales={text!r}: expected positive finite factors")
  return values


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
  p.add_argument("--noise", default="gaussian", choices=noise.KINDS,
                 help="noise kind at each level (see nedenoise_jax.noise; default gaussian)")
  p.add_argument("--noise_param", action="append", default=[], metavar="KEY=VALUE",
                 help="a parameter of the noise kind: patterns, gamma, demosaic, jpeg_quality (repeatable)")
  p.add_argument("--map_scales", default="",
                 help="comma-separated factors for the wrong-map sweep, e.g. 0.5,0.75,1,1.5,2")
  p.add_argument("--nn3d", default="",
                 help="comma-separated NN3D iteration counts: each model is also scored inside the "
                      "nonlocal reinforcement (nedenoise_jax.nn.nonlocal_filter), e.g. 1,2,3")
  p.add_argument("--max_images", type=int, default=0, help="use the first N images of each source (0: all)")
  p.add_argument("--no_plot", action="store_true")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  # Full float32 convolutions everywhere (no TF32 on GPUs), so a table computed on
  # one machine is reproduced on another to 0.01 dB.
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    files.prepare_dir(args.out)  # before hours of evaluation, not after
    sigmas = evaluation.parse_sigmas(args.sigmas)
    noise_model = noise_from_args(args.noise, args.noise_param)
    map_scales = parse_scales(args.map_scales)
    model_list = []
    for item in args.model:
      name, eq, spec = item.partition("=")
      if not eq or os.path.exists(item) or item.startswith(weights.PRETRAINED_PREFIX):
        name, spec = None, item
      model_list.append(load_model(spec, name))
    model_list += nn3d_variants(model_list, args.nn3d)
    names = [m.name for m in model_list]
    if len(set(names)) != len(names):
      raise ValueError(f"two models share a display name in {names}; name them with --model NAME=SPEC")
    results = evaluate(model_list, args.data, sigmas, seed=args.seed, model_sigma=args.model_sigma,
                       max_images=args.max_images, progress=not args.no_progress,
                       noise_model=noise_model, map_scales=map_scales)
  except (ValueError, FileNotFoundError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  make_plot = not args.no_plot
  if make_plot:
    try:
      import matplotlib  # noqa: F401
    except ImportError:  # a denoise-only install: the tables still come
      print("note: no plot drawn, matplotlib is not installed (it comes with the train extra: "
            "pip install 'nedenoise-jax[train]'); the tables are written", file=sys.stderr)
      make_plot = False
  try:
    paths = evaluation.write_results(results, args.out, make_plot=make_plot)
  except OSError as e:  # the folder went away or filled up during the run: keep the table
    print(evaluation.markdown_table(results))
    print(f"error: cannot write the results under {args.out}: {e}", file=sys.stderr)
    return 1
  print(evaluation.markdown_table(results))
  for k, v in paths.items():
    print(f"{k}: {v}")
  return 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
