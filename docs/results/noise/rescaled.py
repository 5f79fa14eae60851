"""NE vs ordinary blind CBDNet on Poisson-Gaussian noise, in [0, 1] and after the same noisy
images are moved to another intensity range (16-bit counts with an offset).

python docs/results/noise/rescaled.py --model ne=runs/noise/cbdnet_norm_equiv \\
    --model ordinary=runs/noise/cbdnet_ordinary --data folder:PATH/set12 --out docs/results/noise/rescaled

For each image: the noisy image y at level sigma (``noise.NoiseModel.at_level``), its
rescaled copy ``s*y + t`` (s = 52428, t = 3000: 80% of a 16-bit range above a dark
offset), each denoised as a float image (no normalization: the model sees the values
as they are), and the rescaled result mapped back, ``(f(s*y + t) - t) / s``. An NE
model gives the same image both ways (up to float32 rounding); the estimated noise map
scales by s. Writes rescaled.json and rescaled.md.
"""

import argparse
import json
import os

import numpy as np

import nedenoise_jax as nj
from nedenoise_jax import files, noise
from nedenoise_jax.data import sources

S, T = 52428.0, 3000.0


def psnr(x, ref):
  return float(10 * np.log10(1.0 / np.mean((np.clip(x, 0, 1) - ref) ** 2)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", action="append", required=True, help="NAME=SPEC")
  p.add_argument("--data", action="append", required=True)
  p.add_argument("--sigmas", default="15,25,50")
  p.add_argument("--out", required=True)
  args = p.parse_args()
  nm = noise.NoiseModel(kind="poisson_gaussian")
  rows = []
  for item in args.model:
    name, _, spec = item.partition("=")
    module, variables = nj.load(spec)
    for source in args.data:
      images, names = sources.load_images(source, module.channels)
      for sigma in (float(s) for s in args.sigmas.split(",")):
        for i, (img, img_name) in enumerate(zip(images, names)):
          y, _ = nm.noisy(img.astype(np.float32), sigma, i)
          y16 = (S * y.astype(np.float64) + T).astype(np.float32)
          out = nj.denoise(y, (module, variables))
          out16 = nj.denoise(y16, (module, variables))
          back = (out16.astype(np.float64) - T) / S
          m = nj.estimate_noise_map(y, (module, variables))
          m16 = nj.estimate_noise_map(y16, (module, variables))
          rows.append({
              "model": name, "data": source, "sigma": sigma, "image": img_name,
              "psnr": psnr(out, img), "psnr_rescaled_mapped_back": psnr(back, img),
              "max_abs_diff": float(np.max(np.abs(back - out))),
              "map_mean_255": float(np.mean(m) * 255),
              "map_rescaled_over_s_mean_255": float(np.mean(m16) / S * 255),
              "map_max_rel_diff": float(np.max(np.abs(m16 / S - m)) / max(1e-12, float(np.max(m)))),
          })
  mean = {}
  for r in rows:
    mean.setdefault((r["model"], r["data"], r["sigma"]), []).append(r)
  lines = ["| model | data | sigma | PSNR [0, 1] | PSNR 16-bit + offset, mapped back | max abs diff | "
           "mean map (0-255) | mean map of rescaled / s | map max rel diff |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  summary = []
  for (model, data, sigma), rs in mean.items():
    agg = {k: float(np.mean([r[k] for r in rs])) for k in ("psnr", "psnr_rescaled_mapped_back",
                                                             "map_mean_255", "map_rescaled_over_s_mean_255")}
    agg["max_abs_diff"] = float(max(r["max_abs_diff"] for r in rs))
    agg["map_max_rel_diff"] = float(max(r["map_max_rel_diff"] for r in rs))
    summary.append({"model": model, "data": data, "sigma": sigma, **agg})
    label = os.path.basename(os.path.normpath(data.partition(":")[2])) or data
    lines.append(f"| {model} | {label} | {sigma:g} | {agg['psnr']:.2f} | {agg['psnr_rescaled_mapped_back']:.2f} | "
                 f"{agg['max_abs_diff']:.2e} | {agg['map_mean_255']:.2f} | {agg['map_rescaled_over_s_mean_255']:.2f} | "
                 f"{agg['map_max_rel_diff']:.2e} |")
  os.makedirs(args.out, exist_ok=True)
  files.write_text(os.path.join(args.out, "rescaled.json"),
                   json.dumps({"s": S, "t": T, "noise": "poisson_gaussian", "summary": summary, "rows": rows},
                              indent=1) + "\n")
  files.write_text(os.path.join(args.out, "rescaled.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
