"""Listing a corpus's files under local or gs:// roots, with a cache so that reruns do not list them again.

    paths = cached_listing(["gs://bucket/librilight/large"], (".flac", ".json"), "/tmp/librilight_large.list")

Listing millions of objects takes minutes on GCS (and a while on a network file system); a tokenization job is
rerun many times over the same corpus, so the sorted list is written once to `cache_path` and read back on the
next run. The cache file is text:

    #listing {"version": 1, "roots": [...], "suffixes": [...], "count": N}
    /data/librilight/large/100/book/a.flac
    ...

The header records what was asked for; a cache whose header does not match the request (other roots or
suffixes), or whose line count is not the recorded count, is rebuilt (with a log message). The file is written
to a temporary name beside it and renamed into place, so an interrupted run never leaves a partial cache.

Local roots are made absolute (the listed paths are absolute); gs:// (any fsspec URL) roots are listed with one
recursive `find` per root (a paginated object listing, not a walk of directories). Suffixes match the end of
the file name, case-insensitively, and may have several parts (".trans.txt", ".tar.gz"). Symbolic links to
directories below a local root are not followed. The cache does not notice files added after it was written:
delete it (or name another) after changing the corpus.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Iterable, Sequence

from audiopalm.files import storage

log = logging.getLogger(__name__)

_HEADER = "#listing "
_VERSION = 1


def _is_local(path: str) -> bool:
  return "://" not in path or path.startswith("file://")


def normalize_roots(roots: Iterable[str | os.PathLike]) -> list[str]:
  """Roots as listed and recorded: local ones absolute (a `file://` prefix dropped), URLs as given; unique."""
  out = []
  for root in roots:
    root = os.fspath(root)
    if _is_local(root):
      root = os.path.abspath(root.removeprefix("file://"))
    else:
      root = root.rstrip("/")
    if root not in out:
      out.append(root)
  return out


def normalize_suffixes(suffixes: Iterable[str]) -> list[str]:
  """Suffixes lower-cased, with a leading dot, sorted and unique."""
  out = set()
  for suffix in suffixes:
    suffix = suffix.lower()
    if not suffix or suffix == ".":
      raise ValueError(f"listing: empty suffix in {list(suffixes)!r}")
    out.add(suffix if suffix.startswith(".") else "." + suffix)
  return sorted(out)


def _matches(name: str, suffixes: Sequence[str]) -> bool:
  name = name.lower()
  return any(name.endswith(s) for s in suffixes)


def _list_local(root: str, suffixes: Sequence[str]) -> list[str]:
  if os.path.isfile(root):
    return [root] if _matches(os.path.basename(root), suffixes) else []
  if not os.path.isdir(root):
    raise FileNotFoundError(f"listing: root not found: {root}")
  found = []
  for folder, dirs, names in os.walk(root):
    dirs.sort()
    found.extend(os.path.join(folder, n) for n in names if _matches(n, suffixes))
  return found


def _list_remote(root: str, suffixes: Sequence[str]) -> list[str]:
  found = [p for p in storage.find(root) if _matches(p.rsplit("/", 1)[-1], suffixes)]  # one paginated listing
  if found or storage.isdir(root):
    return found
  if storage.is_file(root):  # a single object named as the root
    return [root] if _matches(root.rsplit("/", 1)[-1], suffixes) else []
  raise FileNotFoundError(f"listing: root not found: {root}")


def list_files(roots: Iterable[str | os.PathLike], suffixes: Iterable[str]) -> list[str]:
  """The files under `roots` (directories searched recursively, files taken as given) whose names end in one of
  `suffixes`; sorted, unique. A root that does not exist raises FileNotFoundError."""
  suffixes = normalize_suffixes(suffixes)
  found: set[str] = set()
  for root in normalize_roots(roots):
    found.update(_list_local(root, suffixes) if _is_local(root) else _list_remote(root, suffixes))
  return sorted(found)


def _header(roots: list[str], suffixes: list[str], count: int) -> str:
  return _HEADER + json.dumps({"version": _VERSION, "roots": roots, "suffixes": suffixes, "count": count})


def _read_cache(cache: str, roots: list[str], suffixes: list[str]) -> list[str] | None:
  """The cached listing, or None (with the reason logged) when there is none usable for this request."""
  if not storage.is_file(cache):
    return None
  try:
    lines = storage.read_text(cache).split("\n")
  except (OSError, UnicodeDecodeError) as e:
    log.warning("listing cache %s is unreadable (%s): listing again", cache, e)
    return None
  try:
    if not lines[0].startswith(_HEADER):
      raise ValueError("no header")
    header = json.loads(lines[0][len(_HEADER):])
  except ValueError as e:
    log.warning("listing cache %s has a bad header (%s): listing again", cache, e)
    return None
  asked = {"version": _VERSION, "roots": roots, "suffixes": suffixes}
  recorded = {k: header.get(k) for k in asked}
  if recorded != asked:
    log.warning("listing cache %s was made for %s, not %s: listing again", cache, recorded, asked)
    return None
  paths = [line for line in lines[1:] if line]
  if len(paths) != header.get("count"):
    log.warning("listing cache %s holds %d paths, its header says %s: listing again", cache, len(paths),
                header.get("count"))
    return None
  return paths


def _write_cache(cache: str, roots: list[str], suffixes: list[str], paths: list[str]) -> None:
  storage.write_text(cache, "\n".join([_header(roots, suffixes, len(paths))] + paths) + "\n")


def cached_listing(roots: Iterable[str | os.PathLike], suffixes: Iterable[str],
                   cache_path: str | os.PathLike | None) -> list[str]:
  """`list_files(roots, suffixes)`, read from `cache_path` when it holds this listing, else listed and written
  there (atomically). `cache_path` None: no cache.

  A path holding a line break cannot be written to the cache: it is left out, with a warning.
  """
  roots, suffixes = normalize_roots(roots), normalize_suffixes(suffixes)
  if cache_path is None:
    return list_files(roots, suffixes)
  cache = os.fspath(cache_path)
  paths = _read_cache(cache, roots, suffixes)
  if paths is not None:
    log.info("listing: %d files from the cache %s", len(paths), cache)
    return paths
  paths = list_files(roots, suffixes)
  bad = [p for p in paths if "\n" in p or "\r" in p]
  if bad:
    log.warning("listing: left out %d paths holding line breaks, e.g. %r", len(bad), bad[0])
    paths = [p for p in paths if "\n" not in p and "\r" not in p]
  _write_cache(cache, roots, suffixes, paths)
  log.info("listing: %d files under %s, cached in %s", len(paths), roots, cache)
  return paths
