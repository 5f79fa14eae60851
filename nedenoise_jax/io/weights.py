"""Exported weight files: the model description and its variables in one file.

The file is msgpack (via :mod:`flax.serialization`) holding a JSON header
(format name, version, the :func:`models.create` arguments, free-form
metadata) and the variables as nested dicts of arrays. Loading is strict:
every name and shape must match the model the header describes, and a
mismatch raises ``ValueError`` with a readable diff.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from nedenoise_jax import files
from nedenoise_jax.nn import models

FORMAT = "nedenoise-jax-weights"
VERSION = 1
SUFFIX = ".nedenoise"  # file name ending of weights files


def _dummy_inputs(module: nn.Module):
  x = jnp.zeros((1, 8, 8, module.channels), jnp.float32)
  return x, (None if module.blind else jnp.float32(0.1))


def abstract_variables(module: nn.Module) -> dict:
  """Shapes and dtypes of ``module``'s variables, without computing them."""
  x, sigma = _dummy_inputs(module)
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, sigma))


def _fmt_path(path: tuple) -> str:
  return "/".join(str(p) for p in path)


def merge_strict(module: nn.Module, variables: Mapping, *, source: str = "variables") -> dict:
  """Checks ``variables`` against ``module`` and returns them cast to its dtypes.

  Raises ``ValueError`` listing missing names, unexpected names and shape
  mismatches (each as ``collection/layer/.../name``).
  """
  want = flatten_dict(abstract_variables(module))
  got = flatten_dict(dict(variables))
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  mismatched = sorted(k for k in set(want) & set(got)
                      if tuple(np.shape(got[k])) != tuple(want[k].shape))
  if missing or unexpected or mismatched:
    lines = [f"{source} do not fit {type(module).__name__} "
             f"({json.dumps(models.describe(module))}):"]
    lines += [f"  missing:    {_fmt_path(k)} {tuple(want[k].shape)}" for k in missing]
    lines += [f"  unexpected: {_fmt_path(k)} {tuple(np.shape(got[k]))}" for k in unexpected]
    lines += [f"  shape:      {_fmt_path(k)} is {tuple(np.shape(got[k]))}, expected "
              f"{tuple(want[k].shape)}" for k in mismatched]
    raise ValueError("\n".join(lines))
  return unflatten_dict({k: jnp.asarray(got[k], want[k].dtype) for k in want})


def save_weights(path: str | os.PathLike, module: nn.Module, variables: Mapping, *,
                 metadata: Optional[Mapping[str, Any]] = None, overwrite: bool = False) -> str:
  """Writes ``module``'s description and ``variables`` to one file.

  The file appears atomically (written to a temporary file, then renamed), so
  an interrupted save never leaves a half-written file. An existing file is
  only replaced with ``overwrite=True``. Returns the absolute path.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
  variables = merge_strict(module, variables)
  header = {"format": FORMAT, "version": VERSION, "model": models.describe(module),
            "metadata": dict(metadata or {})}
  payload = {"header": json.dumps(header),
             "variables": jax.tree_util.tree_map(np.asarray, variables)}
  data = serialization.msgpack_serialize(payload)
  files.write_bytes(path, data)
  return path


def read_weights(path: str | os.PathLike) -> tuple[dict, dict]:
  """Reads a weights file: returns ``(header, raw variables)`` without building the model."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      payload = serialization.msgpack_restore(f.read())
    header = json.loads(payload["header"])
  except FileNotFoundError:
    raise
  except Exception as e:  # msgpack, json and key errors all mean the same to a user
    raise ValueError(f"{path} is not a nedenoise-jax weights file ({type(e).__name__}: {e})") from None
  if header.get("format") != FORMAT:
    raise ValueError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
  if header.get("version", 0) > VERSION:
    raise ValueError(f"{path}: weights format version {header['version']} is newer than this "
                     f"nedenoise-jax understands ({VERSION}); upgrade nedenoise-jax")
  return header, payload["variables"]


def check_expect(desc: Mapping, expect: Optional[Mapping[str, Any]], where: str) -> None:
  diffs = [f"  {k}: file has {desc.get(k)!r}, expected {v!r}" for k, v in (expect or {}).items()
           if desc.get(k) != (list(v) if isinstance(v, tuple) else v)]
  if diffs:
    raise ValueError(f"{where} holds another model:\n" + "\n".join(diffs))


def load_weights(path: str | os.PathLike, *, expect: Optional[Mapping[str, Any]] = None):
  """Loads a weights file into ``(module, variables)``.

  Args:
    path: a file written by :func:`save_weights`.
    expect: optional :func:`models.create` arguments (e.g. ``{"arch":
      "drunet", "mode": "norm_equiv"}``) the file must match; every
      difference is listed in the error.
  """
  header, raw = read_weights(path)
  desc = header["model"]
  check_expect(desc, expect, os.fspath(path))
  module = models.from_description(desc)
  variables = merge_strict(module, raw, source=f"weights in {os.fspath(path)}")
  return module, variables


PRETRAINED_PREFIX = "pretrained:"
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def pretrained_names() -> list[str]:
  """Names of the weights shipped in the package (``load("pretrained:NAME")``)."""
  if not os.path.isdir(PRETRAINED_DIR):
    return []
  return sorted(f[:-len(SUFFIX)] for f in os.listdir(PRETRAINED_DIR) if f.endswith(SUFFIX))


def pretrained_path(name: str) -> str:
  """The file of the shipped model ``name``; the error lists the names there are."""
  path = os.path.join(PRETRAINED_DIR, name + SUFFIX)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no pretrained model {name!r}; shipped: {', '.join(pretrained_names()) or 'none'}")
  return path
