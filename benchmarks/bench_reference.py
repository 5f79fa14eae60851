"""Times the authors' PyTorch models on this machine, for bench.py's reference column.

    git clone https://github.com/sherbret/normalization_equivariant_nn /tmp/nenn
    pip install -c .ci/requirements.txt -e ".[torch]"   # torch, CPU build
    python benchmarks/bench_reference.py --repo /tmp/nenn
    python benchmarks/bench.py --reference benchmarks/results/reference_cpu.json

The authors' code is AGPL and is not part of this project: this script only
imports it from the checkout given by ``--repo`` (``models/fdncnn.py``,
``models/drunet.py``), builds the full-size non-blind gray FDnCNN and DRUNet
in their ``ordinary``, ``scale-equiv`` and ``norm-equiv`` modes, and times the
same tasks as ``bench.py`` with ``torch.set_num_threads`` (default: all cores):
inference on 1x1xSxS under ``torch.inference_mode``; one training step
(noise added, forward, MSE, backward, Adam) on 16x1x64x64 (FDnCNN) and
4x1x128x128 (DRUNet). Median of ``--repeats`` runs after two warm-ups, the
modes of one model and task interleaved round by round as in ``bench.py``.
Writes ``<out>.json`` and ``<out>.md``; the JSON's ``reference`` dict has the
keys ``bench.py --reference`` reads (``arch/task/mode`` with our mode names).

On a GPU (``--device cuda``): the same tasks, names and shapes as
``bench.py`` there (``inferN``, ``inferBxN``, ``--train_shapes``), each call
ended by ``torch.cuda.synchronize()``; ``--dtype bfloat16`` runs under
``torch.autocast`` (their code has no bfloat16 mode of its own), and
``--tf32`` allows TF32 convolutions as XLA's default precision does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench import _time_interleaved, cpu_model, parse_task, parse_train_shapes, write_results  # noqa: E402

# Our mode names -> the authors'. ``wrapped`` has no counterpart in their code.
MODES = {"ordinary": "ordinary", "scale_equiv": "scale-equiv", "norm_equiv": "norm-equiv"}


def _import_models(repo: str):
  models_dir = os.path.join(os.path.abspath(repo), "models")
  for name in ("fdncnn.py", "drunet.py", "basicblocks.py"):
    if not os.path.isfile(os.path.join(models_dir, name)):
      raise SystemExit(f"bench_reference: {os.path.join(models_dir, name)} not found; --repo must be a "
                       "checkout of github.com/sherbret/normalization_equivariant_nn")
  sys.path.insert(0, models_dir)  # their modules import each other by bare name
  import drunet  # noqa: PLC0415
  import fdncnn  # noqa: PLC0415
  return {"fdncnn": fdncnn.FDnCNN, "drunet": drunet.DRUNet}


def _autocast(torch, device, dtype):
  import contextlib  # noqa: PLC0415

  if dtype == "float32":
    return contextlib.nullcontext()
  return torch.autocast(device_type=device, dtype=torch.bfloat16)


def _inference(torch, cls, mode, task, device="cpu", dtype="float32"):
  batch, size = parse_task(task)
  torch.manual_seed(0)
  model = cls(in_nc=1, out_nc=1, blind=False, mode=MODES[mode]).eval().to(device)
  x = torch.rand(batch, 1, size, size, device=device)
  sigma = torch.full((batch, 1, 1, 1), 25 / 255, device=device)

  def run():
    with torch.inference_mode(), _autocast(torch, device, dtype):
      out = model(x, sigma)
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  return run


def _train(torch, cls, mode, shape, device="cpu", dtype="float32"):
  batch, patch = shape
  torch.manual_seed(0)
  model = cls(in_nc=1, out_nc=1, blind=False, mode=MODES[mode]).train().to(device)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  clean = torch.rand(batch, 1, patch, patch, device=device)
  sigma = torch.full((batch, 1, 1, 1), 25 / 255, device=device)

  def run():
    noisy = clean + sigma * torch.randn_like(clean)
    opt.zero_grad(set_to_none=True)
    with _autocast(torch, device, dtype):
      loss = torch.nn.functional.mse_loss(model(noisy, sigma).float(), clean)
    loss.backward()
    opt.step()
    return loss.item()  # waits for the step, on a GPU too

  return run


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--repo", required=True, help="checkout of sherbret/normalization_equivariant_nn")
  p.add_argument("--archs", default="fdncnn,drunet")
  p.add_argument("--modes", default="ordinary,norm_equiv")
  p.add_argument("--tasks", default="infer256,train")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--tf32", action="store_true", help="cuda: allow TF32 convolutions and matmuls")
  p.add_argument("--train_shapes", default="", help="as bench.py: e.g. fdncnn=128x64,drunet=16x128")
  p.add_argument("--out", default=os.path.join(HERE, "results", "reference_cpu"))
  args = p.parse_args(argv)
  unknown = [m for m in args.modes.split(",") if m not in MODES]
  if unknown:
    p.error(f"--modes: {unknown} not in the authors' code; choose from {sorted(MODES)}")

  import torch  # noqa: PLC0415

  torch.set_num_threads(args.threads)
  if args.device == "cuda":
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest kernels, as XLA's autotuner does
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
  shapes = parse_train_shapes(args.train_shapes)
  classes = _import_models(args.repo)
  rows = []
  for arch in args.archs.split(","):
    for task in args.tasks.split(","):
      modes = args.modes.split(",")
      runs = [_train(torch, classes[arch], m, shapes[arch], args.device, args.dtype) if task == "train"
              else _inference(torch, classes[arch], m, task, args.device, args.dtype) for m in modes]
      for run in runs:  # a second warm-up: oneDNN picks its kernels on the first calls
        run()
      for mode, times in zip(modes, _time_interleaved(runs, args.repeats, block=lambda r: r)):
        med = statistics.median(times)
        rows.append({"arch": arch, "task": task, "mode": mode, "median_s": med, "times_s": times})
        print(f"{arch:7s} {task:9s} {mode:12s} {med:.4f} s", flush=True)
  results = {
      "rows": rows,
      "reference": {f"{r['arch']}/{r['task']}/{r['mode']}": r["median_s"] for r in rows},
      "environment": {"torch": torch.__version__, "threads": args.threads, "cpu": cpu_model(),
                      "device": (torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"),
                      "dtype": args.dtype, "tf32": bool(args.tf32), "train_shapes": shapes,
                      "machine": platform.machine(), "cpu_count": os.cpu_count(),
                      "repeats": args.repeats, "date": time.strftime("%Y-%m-%d")},
  }
  lines = ["| model | task | mode | authors' PyTorch (s) |", "|---|---|---|---:|"]
  lines += [f"| {r['arch']} | {r['task']} | {r['mode']} | {r['median_s']:.4f} |" for r in rows]
  write_results(args.out, results, "\n".join(lines) + "\n")
  print(f"wrote {args.out}.json and {args.out}.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
