"""Compile once: repeated ``denoise()`` calls and the ``nedenoise denoise`` command on a folder.

python benchmarks/denoise_calls.py      # writes benchmarks/results/denoise_calls.{json,md}

1. ``nedenoise_jax.denoise`` called three times in one process on the same
   256x256 gray image with the default model (``pretrained:gray-norm_equiv``):
   the first call loads the weights and compiles; the later ones reuse both.
2. The network alone on that image (the loaded model's ``apply``, jitted and
   warmed up, median of 5): the floor a later call cannot go below. The first
   call's extra time over a later one is what loading and compiling cost.
3. The same three calls on a 64x64 image in a fresh process, where the
   network's own work is small and the cost of compiling dominates.
4. The command line (a fresh process each, as a user runs it) on one image and
   on a folder of 6 images of that size: wall time of the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench import cpu_model, repeat_times  # noqa: E402  (the one CPU description and timing loop)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--out", default=os.path.join(HERE, "results", "denoise_calls"))
  p.add_argument("--calls_only", action="store_true", help="print the three calls' times as JSON")
  args = p.parse_args(argv)
  import numpy as np

  import nedenoise_jax
  from nedenoise_jax.data import dead_leaves
  from nedenoise_jax.io import images

  rng = np.random.default_rng(0)
  clean = dead_leaves(args.size, np.random.default_rng([3, 1, 0]), 1)[..., 0]
  noisy = np.clip(np.rint((clean + 25 / 255 * rng.standard_normal(clean.shape)) * 255), 0, 255).astype(np.uint8)
  calls = []
  for _ in range(3):
    t = time.perf_counter()
    nedenoise_jax.denoise(noisy)
    calls.append(time.perf_counter() - t)
  if args.calls_only:
    print(json.dumps(calls))
    return 0

  import jax
  import jax.numpy as jnp

  module, variables = nedenoise_jax.load("pretrained:gray-norm_equiv")
  net = jax.jit(lambda v, x: module.apply(v, x))
  x = jnp.asarray(noisy, jnp.float32)[None, :, :, None] / 255.0
  alone = repeat_times(lambda: net(variables, x), 5)
  network_s = sorted(alone)[2]
  small = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), "--size", "64", "--calls_only"],
                                    check=True, capture_output=True, text=True).stdout.splitlines()[-1])

  cli = {}
  with tempfile.TemporaryDirectory() as tmp:
    for n in (1, 6):
      folder = os.path.join(tmp, f"in{n}")
      for i in range(n):
        img = np.roll(noisy, 17 * i, axis=1)
        images.write_image(os.path.join(folder, f"img{i}.png"), img)
      cmd = [sys.executable, "-m", "nedenoise_jax.cli", "denoise", folder, "--out", os.path.join(tmp, f"out{n}")]
      t = time.perf_counter()
      subprocess.run(cmd, check=True, capture_output=True)
      cli[n] = time.perf_counter() - t
  result = {
      "machine": f"{cpu_model()}, {os.cpu_count()} cores", "jax": __import__("jax").__version__, "image": f"{args.size}x{args.size} uint8 gray",
      "model": "pretrained:gray-norm_equiv",
      "denoise_calls_s": calls, "later_over_first": [c / calls[0] for c in calls[1:]],
      "first_over_later": [calls[0] / c for c in calls[1:]],
      "network_alone_s": network_s, "load_and_compile_s": calls[0] - min(calls[1:]),
      "later_over_network": [c / network_s for c in calls[1:]],
      "denoise_calls_64_s": small, "first_over_later_64": [small[0] / c for c in small[1:]],
      "cli_one_image_s": cli[1], "cli_six_images_s": cli[6], "cli_six_over_one": cli[6] / cli[1],
  }
  from nedenoise_jax import files

  files.write_text(args.out + ".json", json.dumps(result, indent=1))
  md = [f"Machine: {result['machine']}; JAX {result['jax']}; {result['image']}, {result['model']}.", "",
        "| measurement | seconds |", "|---|---:|"]
  md += [f"| denoise() call {i + 1} | {c:.3f} |" for i, c in enumerate(calls)]
  md += [f"| the network alone (jitted apply, median of 5) | {network_s:.3f} |"]
  md += [f"| denoise() call {i + 1}, 64x64, fresh process | {c:.4f} |" for i, c in enumerate(small)]
  md += [f"| CLI, 1 image (whole process) | {cli[1]:.2f} |", f"| CLI, 6 images (whole process) | {cli[6]:.2f} |",
         "", f"First call / later calls: {', '.join(f'{x:.1f}x' for x in result['first_over_later'])} at "
         f"{args.size}x{args.size}, {', '.join(f'{x:.0f}x' for x in result['first_over_later_64'])} at 64x64; "
         f"later calls / the network alone: {', '.join(f'{x:.2f}x' for x in result['later_over_network'])}; "
         f"loading and compiling: {result['load_and_compile_s']:.2f} s; "
         f"CLI 6 images / 1 image: {result['cli_six_over_one']:.2f}x."]
  files.write_text(args.out + ".md", "\n".join(md) + "\n")
  print("\n".join(md))
  return 0


if __name__ == "__main__":
  from nedenoise_jax import runtime
  runtime.configure_malloc()
  sys.exit(main())
