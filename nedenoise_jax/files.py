"""Atomic file writes: a reader never sees a half-written output, checkpoint export or cache entry.

Every file this package writes (images and stacks, weights, tables, JSON,
plots, the resolved training config, the built CPU kernels) goes through
:func:`atomic_open` (or :func:`atomic_path` for an external program that
writes by name). The content goes to a new temporary file in the
destination's folder, created exclusively (``O_CREAT | O_EXCL |
O_NOFOLLOW``) under an unpredictable name, so a file or symlink planted
there is never opened or followed; it is flushed to disk (``fsync``), then
renamed over the destination, which POSIX makes atomic. A failure leaves the
destination as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import IO, Iterator

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


def _temp_name(path: str) -> str:
  """A new name in ``path``'s folder: hidden, random, ending with ``path``'s file name (so writers
  that choose the format by extension see the right one)."""
  directory, name = os.path.split(path)
  return os.path.join(directory, f".tmp-{secrets.token_hex(8)}-{name}")


def _create_temp(path: str, private: bool) -> tuple[int, str]:
  """``(fd, name)`` of a temporary file created exclusively next to ``path``.

  Permissions: those of a newly created file (``0666 & ~umask``), ``0600`` with ``private``.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  for _ in range(_ATTEMPTS):
    tmp = _temp_name(path)
    try:
      return os.open(tmp, _FLAGS, 0o600 if private else 0o666), tmp
    except FileExistsError:  # taken (by chance or planted): draw another name
      continue
  raise FileExistsError(f"{path}: could not create a temporary file in {os.path.dirname(path)} "
                        f"({_ATTEMPTS} names taken)")


def _commit(fd: int, tmp: str, path: str) -> None:
  """Renames ``tmp`` (open as ``fd``, flushed) over ``path`` once it is still the file this
  process created; then syncs the folder so the rename survives a crash."""
  st, now = os.fstat(fd), os.lstat(tmp)
  if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
    raise OSError(f"{path}: the temporary file {tmp} was replaced while being written; nothing "
                  "was written to the destination")
  os.replace(tmp, path)
  try:
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(dfd)
  except OSError:  # some file systems cannot sync a folder
    pass
  finally:
    os.close(dfd)


def _remove(tmp: str) -> None:
  with contextlib.suppress(FileNotFoundError):
    os.unlink(tmp)  # removes the name only: a symlink put in its place is not followed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, private: bool = False,
                encoding: str | None = None, newline: str | None = None) -> Iterator[IO]:
  """Yields a file object to write; on success its content replaces ``path`` atomically.

  ``mode``: ``"wb"`` (binary; Pillow, tifffile and matplotlib write to it) or
  ``"w"`` (text, UTF-8 unless ``encoding``). The destination's folder is created.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open mode {mode!r}: expected 'w' or 'wb'")
  path = os.path.abspath(os.fspath(path))
  fd, tmp = _create_temp(path, private)
  try:
    kw = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
    # The file object is opened on (a copy of) the descriptor created above, never by name
    # again; it still carries the name, which some writers (tifffile) read.
    with open(tmp, mode, opener=lambda _name, _flags: os.dup(fd), **kw) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    _commit(fd, tmp, path)
  finally:
    os.close(fd)
    _remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, private: bool = False) -> Iterator[str]:
  """Yields the name of a new, empty temporary file for an external program to write (a
  compiler); on success it is synced and replaces ``path``. Python writers use
  :func:`atomic_open`, which never reopens the file by name."""
  path = os.path.abspath(os.fspath(path))
  fd, tmp = _create_temp(path, private)
  try:
    yield tmp
    st, now = os.fstat(fd), os.lstat(tmp)
    if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):  # the program replaced it: sync the new one
      new = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
      os.close(fd)
      fd = new
    os.fsync(fd)
    _commit(fd, tmp, path)
  finally:
    os.close(fd)
    _remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  with atomic_open(path, "w") as f:
    f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically."""
  with atomic_open(path) as f:
    f.write(data)


class OutputError(ValueError):
  """An output folder cannot be used (the flag, the path and the reason are in the message)."""


def prepare_dir(path: str | os.PathLike, flag: str = "--out") -> str:
  """Makes sure outputs can be written under the folder ``path`` before any work is done.

  Creates the folder (and its parents), then creates and removes one
  temporary file in it. Raises :class:`OutputError` naming ``flag`` and the
  path when it is a file, goes through a file, or is not writable.
  """
  path = os.fspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputError(f"{flag} {path}: is a file, not a folder")
  try:
    os.makedirs(path, exist_ok=True)
    fd, tmp = _create_temp(os.path.join(os.path.abspath(path), "probe"), private=True)
  except OSError as e:
    raise OutputError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
  os.close(fd)
  _remove(tmp)
  return path
