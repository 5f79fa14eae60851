"""Look inside a denoiser: adaptive filters, Jacobian spectrum, the normalization dilemma.

nedenoise analyze all --model pretrained:gray-norm_equiv \\
    --model pretrained:gray-ordinary --data folder:PATH/TO/set12 --out docs/results/analysis

* filters: a denoiser's output pixel is locally a weighted average of input
  pixels; the weights are the row of the Jacobian for that pixel (one
  ``jax.vjp``). Rows of an NE model sum to 1 exactly (the output follows a
  constant shift of the input).
* svd: singular values of the full Jacobian on a small crop, and the
  effective dimensionality ``sum(s**2)`` (= E||J z||^2 / sigma^2 for white z:
  the dimension of the space the noise is projected on) versus sigma.
* dilemma: an image is mapped to a range [a, b] before denoising and back
  after: an ordinary model's result depends on that choice, an NE model's
  does not.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nedenoise_jax import data, files, loading
from nedenoise_jax.evaluation.noise import noisy_image
from nedenoise_jax.io import images as image_io
from nedenoise_jax.kernels import xla_options
from nedenoise_jax.loading import model_name
from nedenoise_jax.nn import models

DILEMMA_RANGES = ((0.0, 1.0), (0.0, 255.0), (-1.0, 1.0), (0.25, 0.75), (0.45, 0.55), ("minmax",))


def _noisy(clean: np.ndarray, sigma_255: float, seed: int = 0) -> np.ndarray:
  return noisy_image(clean.astype(np.float32), sigma_255, 0, seed)


def _fn(module, variables, sigma_01):
  blind = models.describe(module)["blind"]
  s = None if blind else jnp.full((1,), sigma_01, jnp.float32)
  return lambda x: module.apply(variables, x, s)


def adaptive_filters(module, variables, noisy: np.ndarray, sigma_255: float,
                     pixels: Sequence[tuple[int, int]]) -> np.ndarray:
  """Jacobian rows ``d out[i, j] / d input`` for each pixel: ``(len(pixels), H, W)``.

  ``noisy``: ``(H, W, C)``; for colour images the rows of the first channel,
  summed over input channels.
  """
  f = _fn(module, variables, sigma_255 / 255.0)
  x = jnp.asarray(noisy[None])
  out, vjp = jax.vjp(f, x)

  @xla_options.jit
  def row(i, j):
    ct = jnp.zeros_like(out).at[0, i, j, 0].set(1.0)
    return vjp(ct)[0][0].sum(-1)

  return np.stack([np.asarray(row(i, j)) for i, j in pixels])


def jacobian(module, variables, noisy: np.ndarray, sigma_255: float) -> np.ndarray:
  """The full Jacobian of a gray crop, ``(H*W, H*W)`` (output pixel x input pixel)."""
  f = _fn(module, variables, sigma_255 / 255.0)
  x = jnp.asarray(noisy[None])
  out, vjp = jax.vjp(f, x)
  n = out.size
  rows = xla_options.jit(jax.vmap(lambda ct: vjp(ct.reshape(out.shape))[0].reshape(-1)))
  eye = jnp.eye(n, dtype=out.dtype)
  return np.concatenate([np.asarray(rows(eye[k:k + 256])) for k in range(0, n, 256)])


def jacobian_spectrum(module, variables, clean: np.ndarray, sigmas: Sequence[float], seed: int = 0):
  """``{sigma: singular values}`` and ``{sigma: effective dimensionality}`` on ``clean``."""
  svals, dims = {}, {}
  for s in sigmas:
    j = jacobian(module, variables, _noisy(clean, s, seed), s)
    sv = np.linalg.svd(j.astype(np.float64), compute_uv=False)
    svals[s], dims[s] = sv, float(np.sum(sv ** 2))
  return svals, dims


def dilemma(module, variables, clean: np.ndarray, sigma_255: float, ranges=DILEMMA_RANGES, seed: int = 0):
  """PSNR after denoising the noisy image mapped to each range [a, b] (and back)."""
  noisy = _noisy(clean, sigma_255, seed)
  blind = models.describe(module)["blind"]
  out = {}
  for r in ranges:
    if r[0] == "minmax":
      lo, hi = float(noisy.min()), float(noisy.max())
      a, b, label = 0.0, 1.0, "min-max of noisy -> [0, 1]"
    else:
      lo, hi, (a, b) = 0.0, 1.0, r
      label = f"[{a:g}, {b:g}]"
    scale = (b - a) / (hi - lo)
    x = a + (noisy - lo) * scale
    s = None if blind else jnp.full((1,), sigma_255 / 255.0 * scale, jnp.float32)
    y = np.asarray(module.apply(variables, jnp.asarray(x[None]), s))[0]
    back = (y - a) / scale + lo
    mse = float(np.mean((np.clip(back, 0, 1) - clean) ** 2))
    out[label] = 10 * np.log10(1.0 / max(mse, 1e-20))
  return out


# --------------------------------------------------------------------------- figures


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path):
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120, format="png")
  _plt().close(fig)
  return path


def plot_filters(named_models, clean, sigmas, pixels, path, window: int = 15, seed: int = 0):
  plt = _plt()
  rows = [(name, s) for name in named_models for s in sigmas]
  fig, axes = plt.subplots(len(rows), 1 + len(pixels), figsize=(2.2 * (1 + len(pixels)), 2.3 * len(rows)),
                           squeeze=False)
  for r, (name, s) in enumerate(rows):
    module, variables = named_models[name]
    noisy = _noisy(clean, s, seed)
    filt = adaptive_filters(module, variables, noisy, s, pixels)
    ax = axes[r][0]
    ax.imshow(noisy[..., 0], cmap="gray", vmin=0, vmax=1)
    for k, (i, j) in enumerate(pixels):
      ax.plot(j, i, "o", mfc="none", mec=f"C{k}", ms=8, mew=2)
    ax.set_title(f"{name}\nsigma={s:g}", fontsize=8)
    ax.axis("off")
    for k, (i, j) in enumerate(pixels):
      ax = axes[r][k + 1]
      h, w = filt.shape[1:]
      i0, j0 = max(0, i - window), max(0, j - window)
      crop = filt[k, i0:min(h, i + window + 1), j0:min(w, j + window + 1)]
      m = np.max(np.abs(crop)) or 1.0
      ax.imshow(crop, cmap="RdBu_r", vmin=-m, vmax=m)
      ax.set_title(f"pixel {k + 1}: sum {filt[k].sum():.3f}", fontsize=8, color=f"C{k}")
      ax.axis("off")
  fig.suptitle("adaptive filters (Jacobian rows; red positive, blue negative)", fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def plot_svd(named_models, clean, sigmas, path, seed: int = 0):
  plt = _plt()
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
  dims_all = {}
  for k, (name, (module, variables)) in enumerate(named_models.items()):
    svals, dims = jacobian_spectrum(module, variables, clean, sigmas, seed)
    dims_all[name] = dims
    for t, s in enumerate(sigmas):
      a1.plot(svals[s], color=f"C{k}", alpha=0.35 + 0.65 * t / max(1, len(sigmas) - 1),
              label=f"{name}, sigma={s:g}")
    a2.plot(list(sigmas), [dims[s] for s in sigmas], "o-", color=f"C{k}", label=name)
  a1.set_xlabel("index")
  a1.set_ylabel("singular value of the Jacobian")
  a1.set_title(f"Jacobian spectrum ({clean.shape[0]}x{clean.shape[1]} crop)")
  a1.legend(fontsize=6)
  a2.set_xlabel("noise level sigma (0-255)")
  a2.set_ylabel("effective dimensionality sum(s^2)")
  a2.set_yscale("log")
  a2.legend(fontsize=8)
  a2.grid(alpha=0.3)
  fig.tight_layout()
  _save(fig, path)
  return dims_all


def plot_dilemma(named_models, clean, sigma_255, path, seed: int = 0):
  plt = _plt()
  res = {name: dilemma(m, v, clean, sigma_255, seed=seed) for name, (m, v) in named_models.items()}
  labels = list(next(iter(res.values())))
  fig, ax = plt.subplots(figsize=(10, 4))
  width = 0.8 / len(res)
  for k, (name, r) in enumerate(res.items()):
    xs = np.arange(len(labels)) + k * width
    ax.bar(xs, [r[lab] for lab in labels], width, label=name)
  ax.set_xticks(np.arange(len(labels)) + width * (len(res) - 1) / 2)
  ax.set_xticklabels(labels, fontsize=8)
  ax.set_ylabel("PSNR (dB)")
  ax.set_title(f"the normalization dilemma: input mapped to [a, b] before denoising, back after "
               f"(sigma={sigma_255:g})", fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  _save(fig, path)
  return res


def default_image(channels: int = 1, source: Optional[str] = None) -> tuple[np.ndarray, str]:
  """Image 5 of ``source`` (the analysis figures use Set12's 05.png), or the first built-in one."""
  if source:
    imgs, names = data.load_images(source, channels)
    return imgs[min(4, len(imgs) - 1)], names[min(4, len(imgs) - 1)]
  imgs, names = data.load_images("builtin:deadleaves-val", channels)
  return imgs[0], names[0]


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse
  import json

  p = argparse.ArgumentParser(prog="python -m nedenoise_jax.analyze", description=__doc__.split("\n\n")[0])
  p.add_argument("what", choices=["filters", "svd", "dilemma", "all"])
  p.add_argument("--model", action="append", required=True, help="pretrained:NAME, weights file or workdir")
  p.add_argument("--image", default=None, help="a clean image file (default: from --data)")
  p.add_argument("--data", default=None,
                 help="a data source whose 5th image is analysed (e.g. folder:PATH/set12; default: built-in)")
  p.add_argument("--sigmas", default="5,25,50", help="noise levels for filters and svd (0-255)")
  p.add_argument("--sigma", type=float, default=25.0, help="noise level of the dilemma")
  p.add_argument("--crop", type=int, default=40, help="side of the crop for svd (full Jacobian)")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  jax.config.update("jax_default_matmul_precision", "highest")
  named = {model_name(s): loading.load_cached(s) for s in args.model}
  channels = {models.describe(m)["channels"] for m, _ in named.values()}
  if channels != {1}:
    print("error: analyze works on gray models", file=sys.stderr)
    return 2
  if args.image:
    clean = image_io.to_channels(image_io.read_float_image(args.image), 1)
    label = args.image
  else:
    clean, label = default_image(1, args.data)
  sigmas = [float(s) for s in args.sigmas.split(",")]
  os.makedirs(args.out, exist_ok=True)
  summary = {"image": label, "sigmas": sigmas}
  h, w = clean.shape[:2]
  if args.what in ("filters", "all"):
    crop = clean[:min(h, 128), :min(w, 128)]
    ch, cw = crop.shape[:2]
    pixels = [(ch // 4, cw // 4), (ch // 2, cw // 2), (3 * ch // 4, cw // 3)]
    print(plot_filters(named, crop, sigmas, pixels, os.path.join(args.out, "adaptive_filters.png")))
  if args.what in ("svd", "all"):
    c0, c1 = (h - args.crop) // 2, (w - args.crop) // 2
    dims = plot_svd(named, clean[c0:c0 + args.crop, c1:c1 + args.crop], sigmas,
                    os.path.join(args.out, "jacobian_svd.png"))
    summary["effective_dimensionality"] = {n: {f"{s:g}": d for s, d in v.items()} for n, v in dims.items()}
    print(os.path.join(args.out, "jacobian_svd.png"))
  if args.what in ("dilemma", "all"):
    summary["dilemma_psnr"] = plot_dilemma(named, clean, args.sigma, os.path.join(args.out, "dilemma.png"))
    print(os.path.join(args.out, "dilemma.png"))
  files.write_text(os.path.join(args.out, f"analysis_{args.what}.json"), json.dumps(summary, indent=1))
  print(json.dumps({k: v for k, v in summary.items() if k != "image"}, indent=1))
  return 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()  # re-executes with malloc keeping freed memory (runtime.py)
  sys.exit(main())
