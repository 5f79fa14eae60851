"""Convert the authors' PyTorch checkpoints (FDnCNN, DRUNet) into nedenoise-jax weights files.

python -m nedenoise_jax.convert_torch drunet_ne.pth --arch drunet --mode norm_equiv --out drunet_ne.nedenoise

Reads the state_dicts of Herbreteau et al.'s reference implementation
(``ordinary``, ``scale-equiv`` and ``norm-equiv`` modes; blind or not, which
is read off the first convolution's input channels when ``--blind`` /
``--nonblind`` is not given). Widths, depth and block counts are read off the
tensors. Their affine convolutions store unconstrained weights ``w`` and use
``roll(w, 1) - w + 1/n`` per filter (flattened in (in, kh, kw) order); the
converted model reproduces those effective kernels, either with our default
``centre`` parametrization (stored as the effective kernel) or with ``roll``
(stored as is). Needs torch (``pip install nedenoise-jax[torch]``), imported
only here.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Optional, Sequence

import numpy as np

from nedenoise_jax.nn import models
from nedenoise_jax.io import weights as weights_lib

TORCH_MODES = {"ordinary": "ordinary", "scale-equiv": "scale_equiv", "scale_equiv": "scale_equiv",
               "norm-equiv": "norm_equiv", "norm_equiv": "norm_equiv"}


class ConversionError(ValueError):
  """The state_dict does not match the expected reference layout."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A ``.pth`` file's tensors as float numpy arrays (wrapper dicts and ``module.`` prefixes removed)."""
  try:
    import torch
  except ImportError:
    raise ImportError("convert_torch needs PyTorch: pip install 'nedenoise-jax[torch]'") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise
  except Exception as e:
    raise ConversionError(f"{path}: cannot read a PyTorch checkpoint ({type(e).__name__}: {e})") from None
  for key in ("state_dict", "model_state_dict", "model", "params"):
    if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
      obj = obj[key]
      break
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path}: expected a state_dict, found {type(obj).__name__}")
  out = {}
  for k, v in obj.items():
    if not hasattr(v, "detach"):
      raise ConversionError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    out[re.sub(r"^(module\.|_orig_mod\.)+", "", k)] = v.detach().cpu().to(torch.float64).numpy()
  return out


def effective_roll_kernel(w: np.ndarray, free: int = 0) -> np.ndarray:
  """The reference's affine kernel of torch weights ``(O, I, kh, kw)``; the last ``free`` inputs kept."""
  con = w[:, : w.shape[1] - free]
  o = con.shape[0]
  flat = con.reshape(o, -1)
  k = (np.roll(flat, 1, axis=1) - flat + 1.0 / flat.shape[1]).reshape(con.shape)
  return np.concatenate([k, w[:, w.shape[1] - free:]], axis=1)


class _Mapper:
  """Collects (our path) -> array from torch keys, remembering which torch keys were used."""

  def __init__(self, sd: Mapping[str, np.ndarray], mode: str, parametrization: str):
    self.sd, self.mode, self.par = sd, mode, parametrization
    self.used: set[str] = set()
    self.out: dict[tuple, np.ndarray] = {}

  def take(self, key: str) -> np.ndarray:
    if key not in self.sd:
      raise ConversionError(f"missing key {key!r} in the state_dict")
    self.used.add(key)
    return self.sd[key]

  def conv(self, tkey: str, path: tuple, *, free: int = 0, bias: bool = False):
    w = self.take(tkey + ".weight")
    if self.mode == "norm_equiv" and self.par == "centre":
      w = effective_roll_kernel(w, free)
    self.out[("params", *path, "kernel")] = np.transpose(w, (2, 3, 1, 0))
    if bias:
      self.out[("params", *path, "bias")] = self.take(tkey + ".bias")

  def alpha(self, tkey: str, path: tuple):
    self.out[("params", *path, "affine", "alpha")] = np.asarray(self.take(tkey + ".alpha")).reshape(())

  def up(self, tkey: str, path: tuple):
    if self.mode == "norm_equiv":
      self.conv(tkey + ".conv1x1", (*path, "conv"))
      return
    w = self.take(tkey + ".weight")  # ConvTranspose2d: (in, out, 2, 2)
    cin, cout = w.shape[:2]
    k = w.reshape(cin, cout * 4)  # channel o*4 + a*2 + b, as pixel_shuffle reads it
    self.out[("params", *path, "conv", "kernel")] = k[None, None]
    if self.mode == "ordinary":
      self.out[("params", *path, "bias")] = self.take(tkey + ".bias")

  def resblock(self, tkey: str, path: tuple):
    bias = self.mode == "ordinary"
    self.conv(f"{tkey}.m_res.0", (*path, "conv1"), bias=bias)
    self.conv(f"{tkey}.m_res.2", (*path, "conv2"), bias=bias)
    if self.mode == "norm_equiv":
      self.alpha(f"{tkey}.sum", (*path, "residual"))


def _indices(sd, pattern: str) -> list[int]:
  return sorted({int(m.group(1)) for k in sd if (m := re.match(pattern, k))})


def _infer_blind(first_in: int, channels: Optional[int], blind: Optional[bool]) -> tuple[bool, int]:
  if blind is None:
    if channels is None:  # 1 (gray blind), 2 (gray + map), 3 (colour blind), 4 (colour + map)
      blind = first_in in (1, 3)
    else:
      blind = first_in == channels
  channels = first_in if blind else first_in - 1
  if channels not in (1, 3):
    raise ConversionError(f"the first convolution takes {first_in} input channels; with blind={blind} "
                          f"that is {channels} image channels, expected 1 or 3")
  return blind, channels


def convert(sd: Mapping[str, np.ndarray], arch: str, mode: str, *, blind: Optional[bool] = None,
            channels: Optional[int] = None, parametrization: str = "centre"):
  """``(module, variables)`` equivalent to the reference network holding ``sd``."""
  if mode not in TORCH_MODES:
    raise ConversionError(f"unknown mode {mode!r}; expected ordinary, scale-equiv or norm-equiv")
  mode = TORCH_MODES[mode]
  if parametrization not in ("centre", "roll"):
    raise ConversionError(f"parametrization {parametrization!r}; expected centre or roll")
  mp = _Mapper(sd, mode, parametrization)
  bias = mode == "ordinary"
  if arch == "fdncnn":
    convs = _indices(sd, r"fdncnn\.(\d+)\.weight$")
    if not convs:
      raise ConversionError("no fdncnn.N.weight keys: not an FDnCNN state_dict "
                            f"(first keys: {', '.join(list(sd)[:5])})")
    first = sd[f"fdncnn.{convs[0]}.weight"]
    blind, channels = _infer_blind(first.shape[1], channels, blind)
    if convs != list(range(0, 2 * len(convs), 2)):
      raise ConversionError(f"FDnCNN convolutions at Sequential indices {convs}; expected 0, 2, 4, ...")
    for i, idx in enumerate(convs):
      last = i == len(convs) - 1
      mp.conv(f"fdncnn.{idx}", (f"conv_{i}",), free=0 if (i or blind) else 1, bias=bias and not last)
    kwargs = dict(features=int(first.shape[0]), depth=len(convs))
  elif arch == "drunet":
    if "m_head.weight" not in sd:
      raise ConversionError("no m_head.weight key: not a DRUNet state_dict "
                            f"(first keys: {', '.join(list(sd)[:5])})")
    blind, channels = _infer_blind(sd["m_head.weight"].shape[1], channels, blind)
    levels = len(_indices(sd, r"m_down\.(\d+)\."))
    blocks = len(_indices(sd, r"m_body\.(\d+)\."))
    feats = [int(sd["m_head.weight"].shape[0])]
    for i in range(levels):
      feats.append(int(sd[f"m_down.{i}.{blocks}.weight"].shape[0]))
    mp.conv("m_head", ("head",), free=0 if blind else 1, bias=bias)
    for i in range(levels):
      for b in range(blocks):
        mp.resblock(f"m_down.{i}.{b}", (f"down_{i}_block_{b}",))
      mp.conv(f"m_down.{i}.{blocks}", (f"down_{i}_conv",), bias=bias)
    for b in range(blocks):
      mp.resblock(f"m_body.{b}", (f"body_block_{b}",))
    for k in range(levels):
      i = levels - 1 - k
      mp.up(f"m_up.{k}.0", (f"up_{i}_conv",))
      for b in range(blocks):
        mp.resblock(f"m_up.{k}.{b + 1}", (f"up_{i}_block_{b}",))
      if mode == "norm_equiv":
        mp.alpha(f"res.{k}", (f"skip_{i + 1}",))
    if mode == "norm_equiv":
      mp.alpha(f"res.{levels}", ("skip_0",))
    mp.conv("m_tail", ("tail",), bias=bias)
    kwargs = dict(features=tuple(feats), blocks=blocks)
  else:
    raise ConversionError(f"unknown arch {arch!r}; the reference code has fdncnn and drunet")
  unused = sorted(set(sd) - mp.used)
  if unused:
    raise ConversionError(f"{len(unused)} unexpected key(s) for a {arch} in {mode} mode: "
                          + ", ".join(unused[:20]) + (" ..." if len(unused) > 20 else ""))
  module = models.create(arch, mode=mode, blind=blind, channels=channels,
                         parametrization=parametrization, **kwargs)
  from flax.traverse_util import unflatten_dict

  variables = weights_lib.merge_strict(module, unflatten_dict(mp.out), source="the converted state_dict")
  return module, variables


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse

  p = argparse.ArgumentParser(prog="python -m nedenoise_jax.convert_torch", description=__doc__.split("\n\n")[0])
  p.add_argument("checkpoint", help="a .pth state_dict of the reference FDnCNN or DRUNet")
  p.add_argument("--arch", required=True, choices=["fdncnn", "drunet"])
  p.add_argument("--mode", required=True, choices=sorted(TORCH_MODES))
  g = p.add_mutually_exclusive_group()
  g.add_argument("--blind", dest="blind", action="store_true", default=None)
  g.add_argument("--nonblind", dest="blind", action="store_false")
  p.add_argument("--channels", type=int, choices=[1, 3], default=None)
  p.add_argument("--parametrization", default="centre", choices=["centre", "roll"])
  p.add_argument("--out", required=True, help="weights file to write (refused if it exists, unless --force)")
  p.add_argument("--force", action="store_true")
  args = p.parse_args(argv)
  try:
    sd = read_state_dict(args.checkpoint)
    module, variables = convert(sd, args.arch, args.mode, blind=args.blind, channels=args.channels,
                                parametrization=args.parametrization)
    path = weights_lib.save_weights(
        args.out, module, variables, overwrite=args.force,
        metadata={"converted_from": os.path.abspath(args.checkpoint), "source": "reference PyTorch code"})
  except (ConversionError, FileExistsError, FileNotFoundError, ImportError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {path}: {models.describe(module)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
