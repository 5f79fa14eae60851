"""Atomic file writes: a reader never sees a half-written output, checkpoint export or cache entry.

Every file this package writes (images, weights, results, plots, the built
CPU kernels) goes through :func:`atomic_path`: the content is written to a
temporary file in the destination's folder, then renamed over the
destination, which POSIX makes atomic. A failure leaves the destination as
it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

# The process's umask, read once: os.umask can only be read by setting it, and a
# moment of umask 0 while another thread creates a file would leave it world-writable.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, private: bool = False) -> Iterator[str]:
  """Yields a temporary path to write; on success it replaces ``path``.

  The temporary name ends with ``path``'s file name, so writers that choose
  the format by extension (Pillow, tifffile, matplotlib) see the right one.
  The file gets the permissions of a newly created file (``0666 & ~umask``),
  or ``0600`` with ``private``. The destination's folder is created.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
  os.close(fd)
  try:
    yield tmp
    if not private:
      os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide shared outputs from others
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
