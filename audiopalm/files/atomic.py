"""Atomic file writes: a reader (another host, a rerun, a crash's survivor) sees the old file or the new one,
never a partial one.

Every small file the stack writes beside its big artefacts goes through here: vocabulary specs, provenance,
manifests, dataset metadata, evaluation reports, listing and offset caches. The data goes to a temporary name in
the target's directory, then one rename with overwrite puts it in place; an earlier file at the target is
replaced, not refused, so a rerun after a crash can always write again. Paths are anything `tf.io.gfile` opens
(local paths, gs://, ram://, and the filesystems of TF plugins); on object stores the rename is a copy and a
delete, still never a partial target.
"""

from __future__ import annotations

import os
import posixpath
import uuid


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
  """Writes `data` to `path` atomically, creating its directory; returns the path written, as a string."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # (only when writing: cheap to import this)
  target = os.fspath(path)
  directory, name = posixpath.split(target)
  if directory:
    tf.io.gfile.makedirs(directory)
  # pid + random suffix: hosts sharing a directory, or threads of one process, never share a temporary file.
  temp = posixpath.join(directory, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  try:
    with tf.io.gfile.GFile(temp, "wb") as f:
      f.write(data)
    tf.io.gfile.rename(temp, target, overwrite=True)
  finally:
    if tf.io.gfile.exists(temp):  # the write or the rename failed: leave no litter beside the target
      tf.io.gfile.remove(temp)
  return target


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
  """Writes `text` (UTF-8, newlines as given) to `path` atomically, creating its directory."""
  return write_bytes_atomic(path, text.encode("utf-8"))
