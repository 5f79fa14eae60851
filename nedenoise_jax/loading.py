"""``load(spec)``: a denoiser from a shipped name, a weights file, a training workdir or a step folder.

Above both storage formats: weights files (:mod:`nedenoise_jax.io.weights`)
and training checkpoints (:mod:`nedenoise_jax.training.checkpoints`, which
need the training dependencies only when a checkpoint is read).
:func:`load_cached` keeps what a string named, so a loop over images, or an
API called once per image, reads the weights once.
"""

from __future__ import annotations

import collections
import os
import threading

from nedenoise_jax.io import weights
from nedenoise_jax.io.weights import PRETRAINED_PREFIX, pretrained_path

_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_CACHE_SIZE = 8
_lock = threading.Lock()


def resolve(path: str | os.PathLike) -> str:
  """The file or folder a spec names (``pretrained:NAME`` -> the shipped file); it must exist."""
  p = os.fspath(path)
  if p.startswith(PRETRAINED_PREFIX):
    p = pretrained_path(p[len(PRETRAINED_PREFIX):])
  if not os.path.exists(p):
    raise FileNotFoundError(f"no weights file or training workdir at {p}")
  return p


def load(path: str | os.PathLike, **kwargs):
  """Loads a denoiser: ``module, variables = load(path)``.

  ``path``: ``"pretrained:NAME"`` (weights shipped in the package, see
  :func:`nedenoise_jax.pretrained_names`), an exported weights file (see
  :func:`nedenoise_jax.save_weights`), a training workdir (its latest
  checkpoint) or one checkpoint step folder (``WORKDIR/checkpoints/STEP``).
  ``expect``: optional :func:`models.create` arguments the model must match.
  """
  p = resolve(path)
  if os.path.isdir(p):
    from nedenoise_jax.training import checkpoints  # local: orbax and optax, for checkpoints only

    return checkpoints.load_checkpoint(p, **kwargs)
  return weights.load_weights(p, **kwargs)


def _version(p: str) -> tuple:
  """What changes when the weights a path names change: the file's stamp, or the checkpoint steps."""
  if os.path.isfile(p):
    st = os.stat(p)  # an atomic replace gives a new inode even where mtimes are coarse or copied
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
  found = []
  for d in (p, os.path.join(p, "checkpoints")):
    if os.path.isdir(d):
      for name in sorted(os.listdir(d)):
        st = os.stat(os.path.join(d, name))
        found.append((d, name, st.st_ino, st.st_mtime_ns))
  return tuple(found)


def load_cached(path: str | os.PathLike):
  """:func:`load`, once per spec while the file (or the workdir's checkpoints) stays the same.

  The same ``(module, variables)`` objects come back, so jitted functions
  keyed by the module are reused. The last few specs are kept.
  """
  p = os.path.abspath(resolve(path))
  key = (p, _version(p))
  with _lock:
    if key in _CACHE:
      _CACHE.move_to_end(key)
      return _CACHE[key]
  loaded = load(p)
  with _lock:
    _CACHE[key] = loaded
    while len(_CACHE) > _CACHE_SIZE:
      _CACHE.popitem(last=False)
  return loaded


def model_name(spec: str) -> str:
  """A short display name: ``pretrained:gray-ne`` -> ``gray-ne``, ``runs/x/`` -> ``x``."""
  if spec.startswith(PRETRAINED_PREFIX):
    return spec[len(PRETRAINED_PREFIX):]
  base = os.path.basename(os.path.normpath(spec))
  return base[:-len(weights.SUFFIX)] if base.endswith(weights.SUFFIX) else base
