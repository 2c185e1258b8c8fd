"""Paths as the storage libraries need them.

    absolute("runs/x")          # /cwd/runs/x as an etils Path (orbax refuses relative local paths)
    absolute("gs://b/runs/x")   # URLs unchanged
"""

from __future__ import annotations

import os

from etils import epath


def absolute(path: str | os.PathLike) -> epath.Path:
  """`path` as orbax needs it: a relative local path made absolute (against the working directory); URLs as given."""
  path = os.fspath(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))
