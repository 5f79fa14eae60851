"""Evaluate denoisers on data sources over a range of noise levels.

python -m nedenoise_jax.evaluate --model pretrained:gray-norm_equiv --model runs/x \\
    --data folder:../shared/data/test/set12 --sigmas 5,15,25,50 --out results/

Every model sees the same noisy images: the noise of image ``i`` at ``sigma`` is
drawn from ``numpy.random.default_rng([seed, round(100 * sigma), i])``. Blind
models get no sigma; non-blind ones the true sigma, or ``--model_sigma`` (a
fixed, possibly mismatched level). PSNR is computed after clipping to [0, 1].
Writes ``results.json``, ``results.csv``, ``results.md`` and
``psnr_vs_sigma.png`` (one curve per model, the training range shaded).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import data, metrics, models, xla_options
from nedenoise_jax import weights as weights_lib


@dataclass
class Model:
  """A loaded denoiser and what the evaluation needs to know about it."""

  name: str
  spec: str
  module: Any
  variables: Any
  description: dict
  train_sigma: Optional[tuple[float, float]] = None  # 0-255 range it was trained on
  extra: dict = field(default_factory=dict)

  @property
  def blind(self) -> bool:
    return bool(self.description["blind"])

  @property
  def channels(self) -> int:
    return int(self.description["channels"])


def _training_range(config: Optional[dict]) -> Optional[tuple[float, float]]:
  noise = (config or {}).get("noise") or {}
  if "sigma_min" in noise and "sigma_max" in noise:
    return float(noise["sigma_min"]), float(noise["sigma_max"])
  return None


def model_name(spec: str) -> str:
  """A short display name: ``pretrained:gray-ne`` -> ``gray-ne``, ``runs/x/`` -> ``x``."""
  if spec.startswith(weights_lib.PRETRAINED_PREFIX):
    return spec[len(weights_lib.PRETRAINED_PREFIX):]
  base = os.path.basename(os.path.normpath(spec))
  return base[:-len(weights_lib.SUFFIX)] if base.endswith(weights_lib.SUFFIX) else base


def load_model(spec: str, name: Optional[str] = None) -> Model:
  """A pretrained name, a weights file or a training workdir, with its training range."""
  module, variables = weights_lib.load(spec)
  config = None
  path = spec
  if spec.startswith(weights_lib.PRETRAINED_PREFIX):
    path = weights_lib.pretrained_path(spec[len(weights_lib.PRETRAINED_PREFIX):])
  if os.path.isdir(path):
    for candidate in (os.path.join(path, "config.json"), os.path.join(path, "..", "..", "config.json")):
      if os.path.isfile(candidate):
        with open(candidate) as f:
          config = json.load(f)
        break
  else:
    header, _ = weights_lib.read_weights(path)
    config = header.get("metadata", {}).get("config")
  return Model(name=name or model_name(spec), spec=spec, module=module, variables=variables,
               description=models.describe(module), train_sigma=_training_range(config))


def noisy_image(clean: np.ndarray, sigma_255: float, index: int, seed: int = 0) -> np.ndarray:
  """The fixed noisy version of image ``index`` at ``sigma_255`` (same for every model)."""
  rng = np.random.default_rng([seed, int(round(sigma_255 * 100)), index])
  return clean + np.float32(sigma_255 / 255.0) * rng.standard_normal(clean.shape, np.float32)


def _scorer(model: Model):
  @xla_options.jit
  def fn(variables, noisy, clean, sigma):
    den = model.module.apply(variables, noisy, None if model.blind else sigma)
    return metrics.psnr(den, clean), metrics.ssim(den, clean), metrics.psnr(noisy, clean), metrics.ssim(noisy, clean)
  return fn


def evaluate(model_list: Sequence[Model], sources: Sequence[str], sigmas: Sequence[float], *,
             seed: int = 0, model_sigma: Optional[float] = None, max_images: int = 0,
             progress: bool = True) -> dict:
  """Scores every model on every source at every sigma; returns the results dict.

  ``results["rows"]``: one row per (model, data, sigma, image) with ``psnr``,
  ``ssim`` and the noisy input's ``psnr_noisy``/``ssim_noisy``;
  ``results["mean"][model][data][sigma]``: their averages over images.
  """
  from tqdm.auto import tqdm

  cache: dict = {}

  def images_of(source, channels):
    if (source, channels) not in cache:
      imgs, names = data.load_images(source, channels)
      if max_images:
        imgs, names = imgs[:max_images], names[:max_images]
      cache[source, channels] = (imgs, names)
    return cache[source, channels]

  total = sum(len(images_of(s, m.channels)[0]) for m in model_list for s in sources) * len(sigmas)
  bar = tqdm(total=total, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
  rows, mean = [], {}
  for m in model_list:
    score = _scorer(m)
    for source in sources:
      imgs, names = images_of(source, m.channels)
      for s in sigmas:
        given = s if model_sigma is None else model_sigma
        per = []
        for i, (img, nm) in enumerate(zip(imgs, names)):
          clean = img[None].astype(np.float32)
          noisy = noisy_image(clean, s, i, seed)
          p, q, pn, qn = (float(v[0]) for v in jax.device_get(
              score(m.variables, noisy, clean, jnp.full((1,), given / 255.0, jnp.float32))))
          row = {"model": m.name, "data": source, "sigma": float(s), "image": nm,
                 "psnr": p, "ssim": q, "psnr_noisy": pn, "ssim_noisy": qn}
          if not m.blind:
            row["model_sigma"] = float(given)
          rows.append(row)
          per.append(row)
          bar.update(1)
          bar.set_postfix(model=m.name, sigma=s)
        mean.setdefault(m.name, {}).setdefault(source, {})[f"{s:g}"] = {
            k: float(np.mean([r[k] for r in per])) for k in ("psnr", "ssim", "psnr_noisy", "ssim_noisy")}
  bar.close()
  return {
      "sigmas": [float(s) for s in sigmas],
      "data": list(sources),
      "seed": seed,
      "model_sigma": model_sigma,
      "models": {m.name: {"spec": m.spec, "description": m.description,
                          "train_sigma": m.train_sigma} for m in model_list},
      "mean": mean,
      "rows": rows,
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                      "matmul_precision": str(jax.config.jax_default_matmul_precision)},
  }


def _data_label(source: str) -> str:
  kind, _, rest = source.partition(":")
  return os.path.basename(os.path.normpath(rest)) if kind == "folder" else rest or source


def markdown_table(results: dict) -> str:
  """One table per data source: PSNR (dB) / SSIM, rows sigma, columns models."""
  out = []
  names = list(results["models"])
  for source in results["data"]:
    out.append(f"### {_data_label(source)} (`{source}`): PSNR dB / SSIM\n")
    out.append("| sigma | noisy | " + " | ".join(names) + " |")
    out.append("|---:|---:|" + "---:|" * len(names))
    for s in results["sigmas"]:
      key = f"{s:g}"
      first = results["mean"][names[0]][source][key]
      cells = [f"{results['mean'][n][source][key]['psnr']:.2f} / {results['mean'][n][source][key]['ssim']:.3f}"
               for n in names]
      out.append(f"| {key} | {first['psnr_noisy']:.2f} / {first['ssim_noisy']:.3f} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)


def plot(results: dict, path: str) -> str:
  """PSNR versus sigma, one panel per data source, one curve per model."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  sources = results["data"]
  fig, axes = plt.subplots(1, len(sources), figsize=(5.5 * len(sources), 4.2), squeeze=False)
  sig = results["sigmas"]
  for ax, source in zip(axes[0], sources):
    shaded = set()
    for name, info in results["models"].items():
      rng = info.get("train_sigma")
      if rng and tuple(rng) not in shaded:
        lo, hi = rng
        if hi - lo < 1e-9:
          ax.axvline(lo, color="0.6", lw=6, alpha=0.35, zorder=0)
        else:
          ax.axvspan(lo, hi, color="0.85", zorder=0)
        shaded.add(tuple(rng))
      ax.plot(sig, [results["mean"][name][source][f"{s:g}"]["psnr"] for s in sig], "o-", ms=4, label=name)
    first = next(iter(results["models"]))
    ax.plot(sig, [results["mean"][first][source][f"{s:g}"]["psnr_noisy"] for s in sig], "k--", lw=1,
            label="noisy input")
    ax.set_xlabel("noise level sigma (0-255)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(_data_label(source) + (" (grey band: training sigma)" if shaded else ""))
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=8)
  fig.tight_layout()
  _atomic_savefig(fig, path)
  plt.close(fig)
  return path


def _atomic_write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _atomic_savefig(fig, path: str) -> None:
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=130)
  os.replace(tmp, path)


def write_results(results: dict, out_dir: str, *, make_plot: bool = True) -> dict:
  """Writes results.json, results.csv, results.md (and psnr_vs_sigma.png); returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f) for k, f in
           (("json", "results.json"), ("csv", "results.csv"), ("md", "results.md"), ("png", "psnr_vs_sigma.png"))}
  _atomic_write(paths["json"], json.dumps(results, indent=1) + "\n")
  fields = ["model", "data", "sigma", "image", "psnr", "ssim", "psnr_noisy", "ssim_noisy", "model_sigma"]
  tmp = paths["csv"] + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fields, extrasaction="ignore")
    w.writeheader()
    for r in results["rows"]:
      w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k not in ("sigma", "model_sigma") else v)
                  for k, v in r.items()})
  os.replace(tmp, paths["csv"])
  _atomic_write(paths["md"], markdown_table(results))
  if make_plot:
    plot(results, paths["png"])
  else:
    del paths["png"]
  return paths


def parse_sigmas(text: str) -> list[float]:
  try:
    values = [float(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise ValueError(f"--sigmas={text!r}: expected comma-separated numbers on the 0-255 scale") from None
  if not values or any(v < 0 or not np.isfinite(v) for v in values):
    raise ValueError(f"--sigmas={text!r}: expected non-negative numbers on the 0-255 scale")
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
  p.add_argument("--max_images", type=int, default=0, help="use the first N images of each source (0: all)")
  p.add_argument("--no_plot", action="store_true")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  # Full float32 convolutions everywhere (no TF32 on GPUs), so a table computed on
  # one machine is reproduced on another to 0.01 dB.
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    sigmas = parse_sigmas(args.sigmas)
    model_list = []
    for item in args.model:
      name, eq, spec = item.partition("=")
      if not eq or os.path.exists(item) or item.startswith(weights_lib.PRETRAINED_PREFIX):
        name, spec = None, item
      model_list.append(load_model(spec, name))
    names = [m.name for m in model_list]
    if len(set(names)) != len(names):
      raise ValueError(f"two models share a display name in {names}; name them with --model NAME=SPEC")
    results = evaluate(model_list, args.data, sigmas, seed=args.seed, model_sigma=args.model_sigma,
                       max_images=args.max_images, progress=not args.no_progress)
  except (ValueError, FileNotFoundError, data.DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = write_results(results, args.out, make_plot=not args.no_plot)
  print(markdown_table(results))
  for k, v in paths.items():
    print(f"{k}: {v}")
  return 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
