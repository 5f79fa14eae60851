"""Training-loss curves of several runs side by side (from their metrics.jsonl files).

python benchmarks/plot_training_curves.py docs/results/training/*.jsonl --out docs/results/training_curves.png
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import json  # noqa: E402


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("files", nargs="+")
  p.add_argument("--out", required=True)
  p.add_argument("--skip", type=int, default=500, help="leave out the first steps (warm-up)")
  args = p.parse_args(argv)
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  fig, ax = plt.subplots(figsize=(7, 4))
  for f in args.files:
    with open(f) as fh:
      rows = [r for r in map(json.loads, filter(str.strip, fh)) if "train/loss" in r]
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["train/loss"] for r in rows])
    keep = steps >= args.skip
    psnr = -10 * np.log10(loss[keep])  # MSE on [0, 1] images -> PSNR of the training batches
    ax.plot(steps[keep], psnr, label=os.path.basename(f).removesuffix(".jsonl"), lw=1)
  ax.set_xlabel("step")
  ax.set_ylabel("training PSNR, -10 log10(MSE) (dB)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  from nedenoise_jax import files

  with files.atomic_open(args.out) as f:
    fig.savefig(f, dpi=120, format="png")
  print(args.out)


if __name__ == "__main__":
  main()
