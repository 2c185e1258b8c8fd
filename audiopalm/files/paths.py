"""Paths as the storage libraries need them.

    absolute("runs/x")          # /cwd/runs/x as an etils Path (orbax refuses relative local paths)
    absolute("gs://b/runs/x")   # URLs unchanged

Importing this module imports `audiopalm.files.storage`, which points etils' epath (and so orbax's metadata files)
at fsspec/gcsfs for URLs rather than `tf.io.gfile`: the stack's one client for object stores.
"""

from __future__ import annotations

import os

from etils import epath

from audiopalm.files import storage


def absolute(path: str | os.PathLike) -> epath.Path:
  """`path` as orbax needs it: a relative local path made absolute (against the working directory); URLs as given."""
  path = os.fspath(path)
  return epath.Path(path if storage.is_remote(path) else os.path.abspath(path.removeprefix("file://")))
