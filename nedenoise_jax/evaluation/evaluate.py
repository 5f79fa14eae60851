"""The evaluation loop: denoisers scored on data sources over a range of noise levels.

Every model sees the same noisy images (:func:`noise.noisy_image`). Blind
models get no sigma; non-blind ones the true sigma, or ``model_sigma`` (a
fixed, possibly mismatched level). PSNR is computed after clipping to [0, 1].
:func:`write_results` writes ``results.json``, ``results.csv``, ``results.md``
and ``psnr_vs_sigma.png`` (one curve per model, the training range shaded).
The command line is :mod:`nedenoise_jax.evaluate` (``nedenoise evaluate``);
training's validation runs the same loop (:func:`mean_scores`).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import files
from nedenoise_jax.data import sources
from nedenoise_jax.evaluation import metrics
from nedenoise_jax.evaluation.noise import noisy_image
from nedenoise_jax import kernels
from nedenoise_jax.kernels import xla_options

__all__ = ["Model", "evaluate", "markdown_table", "mean_scores", "noisy_image", "parse_sigmas", "plot",
           "scorer", "training_range", "write_results"]


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


def training_range(config: Optional[dict]) -> Optional[tuple[float, float]]:
  """The 0-255 sigma range a training config drew from, if it says."""
  noise = (config or {}).get("noise") or {}
  if "sigma_min" in noise and "sigma_max" in noise:
    return float(noise["sigma_min"]), float(noise["sigma_max"])
  return None


def _new_scorer(module, blind: bool):
  """Jitted ``fn(variables, noisy, clean, sigma) -> (psnr, ssim, psnr_noisy, ssim_noisy)``, each ``(N,)``.

  One per (module, blind), kept: a training run's validations and an
  evaluation's sources and sigmas reuse one compiled function per image shape.
  ``sigma`` is ignored when ``blind``. The CPU path (``NEDENOISE_CPU_CONV``)
  is part of the key, since it is chosen when a program is traced.
  """
  @xla_options.jit
  def fn(variables, noisy, clean, sigma):
    den = module.apply(variables, noisy, None if blind else sigma)
    return metrics.psnr(den, clean), metrics.ssim(den, clean), metrics.psnr(noisy, clean), metrics.ssim(noisy, clean)

  return fn


scorer = kernels.per_cpu_path(_new_scorer, maxsize=16)


_KEYS = ("psnr", "ssim", "psnr_noisy", "ssim_noisy")


def score_images(module, variables, images: Sequence[np.ndarray], sigma_255: float, *, blind: bool,
                 seed: int = 0, given_255: Optional[float] = None, on_image=None) -> list[dict]:
  """``{"psnr", "ssim", "psnr_noisy", "ssim_noisy"}`` of each image denoised at ``sigma_255``.

  The one loop over images of the package. ``given_255``: the sigma the
  model is told (default the true one). ``on_image()`` is called after each.
  """
  fn = scorer(module, blind)
  given = sigma_255 if given_255 is None else given_255
  sig = jnp.full((1,), given / 255.0, jnp.float32)
  out = []
  for i, img in enumerate(images):
    clean = img[None].astype(np.float32)
    noisy = noisy_image(clean, sigma_255, i, seed)
    values = jax.device_get(fn(variables, noisy, clean, sig))
    out.append({k: float(v[0]) for k, v in zip(_KEYS, values)})
    if on_image is not None:
      on_image()
  return out


def mean_scores(module, variables, images, sigmas_255, *, blind: bool, seed: int = 0) -> dict:
  """Mean PSNR/SSIM over ``images`` at each sigma (0-255 scale): training's validation.

  Returns ``{sigma: {"psnr", "ssim", "psnr_noisy", "ssim_noisy"}}`` (means).
  """
  out = {}
  for s in sigmas_255:
    per = score_images(module, variables, images, s, blind=blind, seed=seed)
    out[float(s)] = {k: float(np.mean([r[k] for r in per])) for k in _KEYS}
  return out


def evaluate(model_list: Sequence[Model], data_sources: Sequence[str], sigmas: Sequence[float], *,
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
      imgs, names = sources.load_images(source, channels)
      if max_images:
        imgs, names = imgs[:max_images], names[:max_images]
      cache[source, channels] = (imgs, names)
    return cache[source, channels]

  total = sum(len(images_of(s, m.channels)[0]) for m in model_list for s in data_sources) * len(sigmas)
  bar = tqdm(total=total, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
  rows, mean = [], {}
  for m in model_list:
    for source in data_sources:
      imgs, names = images_of(source, m.channels)
      for s in sigmas:
        given = s if model_sigma is None else model_sigma
        bar.set_postfix(model=m.name, sigma=s)
        scores = score_images(m.module, m.variables, imgs, s, blind=m.blind, seed=seed, given_255=given,
                              on_image=lambda: bar.update(1))
        per = []
        for nm, sc in zip(names, scores):
          row = {"model": m.name, "data": source, "sigma": float(s), "image": nm, **sc}
          if not m.blind:
            row["model_sigma"] = float(given)
          per.append(row)
        rows += per
        mean.setdefault(m.name, {}).setdefault(source, {})[f"{s:g}"] = {
            k: float(np.mean([r[k] for r in per])) for k in _KEYS}
  bar.close()
  return {
      "sigmas": [float(s) for s in sigmas],
      "data": list(data_sources),
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
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=130, format="png")
  plt.close(fig)
  return path


def write_results(results: dict, out_dir: str, *, make_plot: bool = True) -> dict:
  """Writes results.json, results.csv, results.md (and psnr_vs_sigma.png); returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f) for k, f in
           (("json", "results.json"), ("csv", "results.csv"), ("md", "results.md"), ("png", "psnr_vs_sigma.png"))}
  files.write_text(paths["json"], json.dumps(results, indent=1) + "\n")
  fields = ["model", "data", "sigma", "image", "psnr", "ssim", "psnr_noisy", "ssim_noisy", "model_sigma"]
  with files.atomic_path(paths["csv"]) as tmp:
    with open(tmp, "w", newline="") as f:
      w = csv.DictWriter(f, fields, extrasaction="ignore")
      w.writeheader()
      for r in results["rows"]:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k not in ("sigma", "model_sigma") else v)
                    for k, v in r.items()})
  files.write_text(paths["md"], markdown_table(results))
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
