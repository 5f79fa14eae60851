"""Look inside a denoiser: adaptive filters, Jacobian spectrum, the normalization dilemma,
receptive fields.

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
* erf: the theoretical receptive field of each model (computed from the
  model: the support of the centre pixel's gradient, see
  :func:`receptive_field`) and its effective receptive field (Luo et al.
  2016): the absolute gradient of the centre output pixel with respect to the
  input, averaged over noisy images, at several sigmas; maps, radial profiles
  and the radii holding 50/90/99% of it.
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


# --------------------------------------------------------------------------- receptive fields


def _probe(module):
  """The same architecture in ``ordinary`` mode with 2 features per layer (a receptive field
  depends on kernel sizes, strides and depth, not on widths or the mode's layers)."""
  desc = dict(models.describe(module))
  desc["mode"] = "ordinary"
  for key in ("features", "estimator_features"):
    if key in desc:
      desc[key] = [2] * len(desc[key]) if isinstance(desc[key], list) else 2
  desc.pop("dtype", None)
  return models.from_description(desc)


def receptive_field(module, *, max_size: int = 2048) -> dict:
  """The theoretical receptive field of ``module``'s centre output pixel, computed from the model.

  The gradient of that pixel with respect to the input is taken for a copy of
  the architecture (:func:`_probe`) whose kernels are all ``1/fan_in`` and
  biases 0, on a positive image, in float64: every ReLU is then active and no
  path cancels, so the gradient's support is exactly the set of pixels the
  output can depend on. The image grows (a multiple of 8, doubling) until the
  support stays inside it. Returns ``{"height", "width", "radius"}`` (the
  support's bounding box, and the largest distance from the centre along an
  axis); for ``wrapped`` models also ``"global": True``: the per-image
  mean and standard deviation make every output depend on every input pixel
  (the numbers are then those of the network inside).
  """
  probe = _probe(module)
  desc = models.describe(module)
  with jax.enable_x64(True):
    size = 32
    while True:
      x = jnp.full((1, size, size, probe.channels), 0.5, jnp.float64)
      sigma = None if desc["blind"] else jnp.full((1,), 0.1, jnp.float64)
      variables = jax.eval_shape(probe.init, jax.random.key(0), x, sigma)

      def fill(path, leaf):
        name = str(path[-1])
        if leaf.ndim == 4:
          return jnp.full(leaf.shape, 1.0 / int(np.prod(leaf.shape[:3])), jnp.float64)
        if "scale" in name or "var" in name:
          return jnp.ones(leaf.shape, jnp.float64)
        return jnp.zeros(leaf.shape, jnp.float64)

      v = jax.tree_util.tree_map_with_path(fill, variables)
      c = size // 2
      g = jax.grad(lambda x: probe.apply(v, x, sigma)[0, c, c, :].sum())(x)
      support = np.asarray(jnp.any(g[0] != 0, axis=-1))
      rows, cols = np.nonzero(support)
      touches = rows.min() == 0 or cols.min() == 0 or rows.max() == size - 1 or cols.max() == size - 1
      if not touches or size >= max_size:
        break
      size *= 2
  out = {"height": int(rows.max() - rows.min() + 1), "width": int(cols.max() - cols.min() + 1),
         "radius": int(max(c - rows.min(), rows.max() - c, c - cols.min(), cols.max() - c))}
  if touches:
    out["at_least"] = True  # larger than max_size
  if desc["mode"] == "wrapped":
    out["global"] = True
  return out


def effective_receptive_field(module, variables, images: Sequence[np.ndarray], sigma_255: float, *,
                              size: int = 96, seed: int = 0) -> np.ndarray:
  """Luo et al.'s ERF: ``mean_i |d out_i[c, c] / d noisy_i|`` over ``images`` (centre crops of
  ``size``), summed over channels, normalized to sum 1. ``(size, size)``."""
  f = _fn(module, variables, sigma_255 / 255.0)
  c = size // 2

  @xla_options.jit
  def grad(x):
    return jax.grad(lambda x: f(x)[0, c, c, :].sum())(x)[0]

  acc = np.zeros((size, size))
  for i, img in enumerate(images):
    h, w = img.shape[:2]
    if min(h, w) < size:
      raise ValueError(f"erf: image {i} of shape {img.shape} is smaller than the {size}x{size} crop")
    y0, x0 = (h - size) // 2, (w - size) // 2
    noisy = noisy_image(img[y0:y0 + size, x0:x0 + size][None].astype(np.float32), sigma_255, i, seed)
    acc += np.abs(np.asarray(grad(jnp.asarray(noisy)))).sum(-1)
  return acc / acc.sum()


def radial_profile(erf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(radii, share of the ERF within each radius)`` (Chebyshev rings around the centre)."""
  size = erf.shape[0]
  c = size // 2
  yy, xx = np.mgrid[0:size, 0:size]
  ring = np.maximum(np.abs(yy - c), np.abs(xx - c))
  radii = np.arange(ring.max() + 1)
  return radii, np.array([erf[ring <= r].sum() for r in radii])


def erf_summary(erf: np.ndarray) -> dict:
  radii, cum = radial_profile(erf)
  return {f"r{int(q * 100)}": int(radii[np.searchsorted(cum, q)]) for q in (0.5, 0.9, 0.99)}


def plot_erf(named_models, images, sigmas, path, *, size: int = 96, seed: int = 0) -> dict:
  """ERF maps (log scale) per model and sigma, and their cumulative radial profiles; returns the summary."""
  plt = _plt()
  names = list(named_models)
  fig, axes = plt.subplots(len(names), len(sigmas) + 1, figsize=(2.5 * (len(sigmas) + 1), 2.7 * len(names)),
                           squeeze=False)
  res: dict = {}
  for r, name in enumerate(names):
    module, variables = named_models[name]
    rf = receptive_field(module)
    res[name] = {"receptive_field": rf, "erf": {}}
    prof = axes[r][-1]
    # Shown: the theoretical field and 4 pixels around it (the ERF is 0 outside it).
    half = min(size // 2, rf["radius"] + 4)
    c = size // 2
    for k, s in enumerate(sigmas):
      e = effective_receptive_field(module, variables, images, s, size=size, seed=seed)
      res[name]["erf"][f"{s:g}"] = erf_summary(e)
      ax = axes[r][k]
      ax.imshow(np.log10(e[c - half:c + half + 1, c - half:c + half + 1] + 1e-8), cmap="magma", vmin=-6,
                vmax=np.log10(e.max()))
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{name}\nsigma={s:g}: r90={res[name]['erf'][f'{s:g}']['r90']}", fontsize=7)
      radii, cum = radial_profile(e)
      prof.plot(radii, cum, label=f"sigma={s:g}")
    prof.axvline(rf["radius"], color="0.5", ls=":", label=f"theoretical r={rf['radius']}")
    prof.set_xlim(0, min(size // 2, rf["radius"] + 4))
    prof.set_xlabel("radius (px)", fontsize=7)
    prof.set_ylabel("share within", fontsize=7)
    prof.tick_params(labelsize=6)
    prof.legend(fontsize=6)
    prof.grid(alpha=0.3)
  fig.suptitle("effective receptive fields: log10 mean |d centre output / d input|", fontsize=9)
  fig.tight_layout()
  _save(fig, path)
  return res


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path):
  with files.atomic_open(path) as f:
    fig.savefig(f, dpi=120, format="png")
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
  p.add_argument("what", choices=["filters", "svd", "dilemma", "erf", "all"])
  p.add_argument("--model", action="append", required=True, help="pretrained:NAME, weights file or workdir")
  p.add_argument("--image", default=None, help="a clean image file (default: from --data)")
  p.add_argument("--data", default=None,
                 help="a data source whose 5th image is analysed (e.g. folder:PATH/set12; default: built-in)")
  p.add_argument("--sigmas", default="5,25,50", help="noise levels for filters and svd (0-255)")
  p.add_argument("--sigma", type=float, default=25.0, help="noise level of the dilemma")
  p.add_argument("--crop", type=int, default=40, help="side of the crop for svd (full Jacobian)")
  p.add_argument("--erf_size", type=int, default=96, help="side of the centre crops for erf")
  p.add_argument("--erf_images", type=int, default=12, help="images averaged by erf (from --data)")
  p.add_argument("--untrained", action="store_true",
                 help="erf: also each model's architecture with fresh random weights")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  import matplotlib  # noqa: F401  (every output is a figure: a missing train extra fails before any work)

  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    files.prepare_dir(args.out)
  except files.OutputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
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
  summary = {"image": label, "sigmas": sigmas,
             "receptive_field": {n: receptive_field(m) for n, (m, _) in named.items()}}
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
  if args.what in ("erf", "all"):
    imgs, _ = data.load_images(args.data or "builtin:deadleaves-val", 1)
    erf_models = dict(named)
    if args.untrained:
      for n, (m, v) in named.items():
        x = jnp.zeros((1, 16, 16, 1), jnp.float32)
        sig = None if models.describe(m)["blind"] else jnp.zeros((1,), jnp.float32)
        erf_models[f"{n} (untrained)"] = (m, m.init(jax.random.key(0), x, sig))
    summary["erf"] = plot_erf(erf_models, imgs[:args.erf_images], sigmas, os.path.join(args.out, "erf.png"),
                              size=args.erf_size)
    print(os.path.join(args.out, "erf.png"))
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
