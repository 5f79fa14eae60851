"""The evaluation loop: denoisers scored on data sources over a range of noise levels.

Every model sees the same noisy images (:meth:`noise.NoiseModel.noisy`: Gaussian
by default, or another noise kind at each level). Blind models get no sigma;
non-blind ones the true noise map, or ``model_sigma`` (a fixed, possibly
mismatched level), times a ``map_scale`` (the "wrong map" sweep; a blind
CBDNet scales its own estimate). PSNR is computed after clipping to [0, 1].
:func:`write_results` writes ``results.json``, ``results.csv``, ``results.md``
and ``psnr_vs_sigma.png`` (one curve per model, the training range shaded).
The command line is :mod:`nedenoise_jax.evaluate` (``nedenoise evaluate``);
training's validation runs the same loop (:func:`mean_scores`).
"""

from __future__ import annotations

import csv
import dataclasses
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
from nedenoise_jax.noise import NoiseModel, noisy_image
from nedenoise_jax import kernels
from nedenoise_jax.kernels import xla_options
from nedenoise_jax.nn import models

__all__ = ["Model", "evaluate", "markdown_table", "mean_scores", "noisy_image", "parse_sigmas", "plot",
           "plot_map_scales", "scorer", "training_range", "write_results"]


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
  """The 0-255 sigma range a training config drew from, if it says (Gaussian noise kinds only)."""
  noise = (config or {}).get("noise") or {}
  if noise.get("kind", "gaussian") not in ("gaussian", "gaussian_map"):
    return None
  if "sigma_min" in noise and "sigma_max" in noise:
    return float(noise["sigma_min"]), float(noise["sigma_max"])
  return None


def _new_scorer(module, blind: bool):
  """Jitted ``fn(variables, noisy, clean, sigma, map_scale) -> (psnr, ssim, psnr_noisy, ssim_noisy)``, each ``(N,)``.

  One per (module, blind), kept: a training run's validations and an
  evaluation's sources and sigmas reuse one compiled function per image shape.
  ``sigma`` is ignored when ``blind``; ``map_scale`` is used only by models that
  estimate their map (the others get a scaled ``sigma``). The CPU path
  (``NEDENOISE_CPU_CONV``) is part of the key, since it is chosen when a
  program is traced.
  """
  kw = models.estimates_noise(module)

  @xla_options.jit
  def fn(variables, noisy, clean, sigma, map_scale):
    extra = {"map_scale": map_scale} if kw else {}
    den = module.apply(variables, noisy, None if blind else sigma, **extra)
    return metrics.psnr(den, clean), metrics.ssim(den, clean), metrics.psnr(noisy, clean), metrics.ssim(noisy, clean)

  return fn


scorer = kernels.per_cpu_path(_new_scorer, maxsize=16)


_KEYS = ("psnr", "ssim", "psnr_noisy", "ssim_noisy")


def score_images(module, variables, images: Sequence[np.ndarray], sigma_255: float, *, blind: bool,
                 seed: int = 0, given_255: Optional[float] = None, on_image=None,
                 noise_model: Optional[NoiseModel] = None, map_scale: float = 1.0) -> list[dict]:
  """``{"psnr", "ssim", "psnr_noisy", "ssim_noisy"}`` of each image denoised at level ``sigma_255``.

  The one loop over images of the package. ``noise_model``: the noise kind
  (default Gaussian), drawn at ``sigma_255`` (:meth:`NoiseModel.at_level`).
  ``given_255``: a constant sigma the model is told instead of the true map.
  ``map_scale``: the factor applied to the map the model gets (or, for a
  blind CBDNet, to its estimate). ``on_image()`` is called after each.
  """
  fn = scorer(module, blind)
  nm = noise_model or NoiseModel()
  gaussian = nm.kind == "gaussian"
  scale = jnp.asarray(map_scale, jnp.float32)
  out = []
  for i, img in enumerate(images):
    clean = img[None].astype(np.float32)
    noisy, true_map = nm.noisy(clean, sigma_255, i, seed)
    if given_255 is not None or gaussian:
      level = sigma_255 if given_255 is None else given_255
      sig = jnp.full((1,), level / 255.0 * map_scale, jnp.float32)
    else:
      sig = jnp.asarray(true_map * np.float32(map_scale))
    values = jax.device_get(fn(variables, noisy, clean, sig, scale))
    out.append({k: float(v[0]) for k, v in zip(_KEYS, values)})
    if on_image is not None:
      on_image()
  return out


def mean_scores(module, variables, images, sigmas_255, *, blind: bool, seed: int = 0,
                noise_model: Optional[NoiseModel] = None) -> dict:
  """Mean PSNR/SSIM over ``images`` at each level (0-255 scale): training's validation.

  Returns ``{sigma: {"psnr", "ssim", "psnr_noisy", "ssim_noisy"}}`` (means).
  """
  out = {}
  for s in sigmas_255:
    per = score_images(module, variables, images, s, blind=blind, seed=seed, noise_model=noise_model)
    out[float(s)] = {k: float(np.mean([r[k] for r in per])) for k in _KEYS}
  return out


def responds_to_map_scale(m: "Model") -> bool:
  """Non-blind models (their map is scaled) and blind CBDNets (their estimate is)."""
  return not m.blind or models.estimates_noise(m.module)


def evaluate(model_list: Sequence[Model], data_sources: Sequence[str], sigmas: Sequence[float], *,
             seed: int = 0, model_sigma: Optional[float] = None, max_images: int = 0,
             progress: bool = True, noise_model: Optional[NoiseModel] = None,
             map_scales: Sequence[float] = ()) -> dict:
  """Scores every model on every source at every level; returns the results dict.

  ``results["rows"]``: one row per (model, data, sigma, image) with ``psnr``,
  ``ssim`` and the noisy input's ``psnr_noisy``/``ssim_noisy``;
  ``results["mean"][model][data][sigma]``: their averages over images.
  ``noise_model``: the noise kind (default Gaussian) at each level.
  ``map_scales``: the wrong-map sweep, for the models whose map can be
  scaled (:func:`responds_to_map_scale`): ``results["map_sweep"][model][data][sigma][scale]``
  holds the mean scores with the map multiplied by each factor.
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

  noise_m = noise_model or NoiseModel()
  sweep_ids = {id(m) for m in model_list if responds_to_map_scale(m)} if map_scales else set()
  total = sum(len(images_of(s, m.channels)[0]) * (1 + (len(map_scales) if id(m) in sweep_ids else 0))
              for m in model_list for s in data_sources) * len(sigmas)
  bar = tqdm(total=total, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
  rows, mean, sweep = [], {}, {}
  for m in model_list:
    for source in data_sources:
      imgs, names = images_of(source, m.channels)
      for s in sigmas:
        given = s if model_sigma is None else model_sigma
        bar.set_postfix(model=m.name, sigma=s)
        scores = score_images(m.module, m.variables, imgs, s, blind=m.blind, seed=seed,
                              given_255=None if (model_sigma is None and noise_m.kind != "gaussian") else given,
                              on_image=lambda: bar.update(1), noise_model=noise_m)
        per = []
        for nm, sc in zip(names, scores):
          row = {"model": m.name, "data": source, "sigma": float(s), "image": nm, **sc}
          if not m.blind:
            row["model_sigma"] = float(given)
          per.append(row)
        rows += per
        mean.setdefault(m.name, {}).setdefault(source, {})[f"{s:g}"] = {
            k: float(np.mean([r[k] for r in per])) for k in _KEYS}
        if id(m) in sweep_ids:
          for f in map_scales:
            bar.set_postfix(model=m.name, sigma=s, map_scale=f)
            sc = score_images(m.module, m.variables, imgs, s, blind=m.blind, seed=seed,
                              given_255=None if model_sigma is None else model_sigma,
                              on_image=lambda: bar.update(1), noise_model=noise_m, map_scale=f)
            sweep.setdefault(m.name, {}).setdefault(source, {}).setdefault(f"{s:g}", {})[f"{f:g}"] = {
                k: float(np.mean([r[k] for r in sc])) for k in _KEYS}
  bar.close()
  results = {
      "sigmas": [float(s) for s in sigmas],
      "data": list(data_sources),
      "seed": seed,
      "noise": noise_m.kind,
      "noise_model": {k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in dataclasses.asdict(noise_m).items()},
      "model_sigma": model_sigma,
      "models": {m.name: {"spec": m.spec, "description": m.description,
                          "train_sigma": m.train_sigma} for m in model_list},
      "mean": mean,
      "rows": rows,
      "environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                      "matmul_precision": str(jax.config.jax_default_matmul_precision)},
  }
  if map_scales:
    results["map_scales"] = [float(f) for f in map_scales]
    results["map_sweep"] = sweep
  return results


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
  for name, per_source in results.get("map_sweep", {}).items():
    scales = results["map_scales"]
    for source, per_sigma in per_source.items():
      out.append(f"### {name} on {_data_label(source)}: PSNR dB with the noise map scaled by a factor\n")
      out.append("| sigma | " + " | ".join(f"x{f:g}" for f in scales) + " |")
      out.append("|---:|" + "---:|" * len(scales))
      for key, per_scale in per_sigma.items():
        out.append(f"| {key} | " + " | ".join(f"{per_scale[f'{f:g}']['psnr']:.2f}" for f in scales) + " |")
      out.append("")
  return "\n".join(out)


def _save_figure(fig, path: str) -> str:
  fig.tight_layout()
  with files.atomic_open(path) as f:
    fig.savefig(f, dpi=130, format="png")
  import matplotlib.pyplot as plt

  plt.close(fig)
  return path


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
  return _save_figure(fig, path)


def plot_map_scales(results: dict, path: str) -> str:
  """PSNR versus the factor applied to the noise map, one panel per data source,
  one curve per (model, sigma): the wrong-map experiment."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  sources = results["data"]
  scales = results["map_scales"]
  fig, axes = plt.subplots(1, len(sources), figsize=(5.5 * len(sources), 4.2), squeeze=False)
  for ax, source in zip(axes[0], sources):
    for name, per_source in results["map_sweep"].items():
      for key, per_scale in per_source.get(source, {}).items():
        ax.plot(scales, [per_scale[f"{f:g}"]["psnr"] for f in scales], "o-", ms=4,
                label=f"{name}, sigma={key}")
    ax.axvline(1.0, color="0.6", lw=1, ls=":")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(scales)
    ax.set_xticklabels([f"{f:g}" for f in scales])
    ax.set_xlabel("noise map given / true (x)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{_data_label(source)}: under- and over-estimated noise ({results.get('noise', 'gaussian')})")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7)
  return _save_figure(fig, path)


def write_results(results: dict, out_dir: str, *, make_plot: bool = True) -> dict:
  """Writes results.json, results.csv, results.md (and psnr_vs_sigma.png, and
  psnr_vs_map_scale.png after a map-scale sweep); returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f) for k, f in
           (("json", "results.json"), ("csv", "results.csv"), ("md", "results.md"), ("png", "psnr_vs_sigma.png"))}
  files.write_text(paths["json"], json.dumps(results, indent=1) + "\n")
  fields = ["model", "data", "sigma", "image", "psnr", "ssim", "psnr_noisy", "ssim_noisy", "model_sigma"]
  with files.atomic_open(paths["csv"], "w", newline="") as f:
    w = csv.DictWriter(f, fields, extrasaction="ignore")
    w.writeheader()
    for r in results["rows"]:
      w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k not in ("sigma", "model_sigma") else v)
                  for k, v in r.items()})
  files.write_text(paths["md"], markdown_table(results))
  if make_plot:
    plot(results, paths["png"])
    if results.get("map_sweep"):
      paths["map_png"] = plot_map_scales(results, os.path.join(out_dir, "psnr_vs_map_scale.png"))
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
