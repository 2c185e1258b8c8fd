"""t5x-style command-line configuration: `--gin_file=...` (repeatable) and `--gin.NAME=VALUE`.

Shared by every entry point; only entry points call it.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import pathlib
import re
import sys
from typing import Any, Sequence

import gin

GIN_ROOT = pathlib.Path(__file__).resolve().parents[2] / "gin_configs"


def _search_gin_root_first() -> None:
  """Makes gin look in gin_configs/ before the working directory.

  gin tries the working directory first and, for a path it does not find there, its package-resource reader,
  which crashes when the working directory holds a directory named like the path's first part: `include
  'runs/pretrain_text.gin'` fails as soon as a run has written `./runs/` (google/gin-config has no option for
  this; the search-path list is module state, so it is edited here, in the one place that sets it).
  """
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  if str(GIN_ROOT) in prefixes:
    prefixes.remove(str(GIN_ROOT))
  prefixes.insert(0, str(GIN_ROOT))


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[],
                      help="Gin file to parse (repeatable); relative to the working directory or gin_configs/.")
  parser.add_argument("--gin_search_path", action="append", default=[],
                      help="Extra directory for gin `include` statements.")


def _gin_value(value: str) -> str:
  """A gin value: references (`%X`, `@f()`) and Python literals as written; anything else is a string."""
  stripped = value.strip()
  if stripped.startswith(("%", "@")):
    return stripped
  try:
    ast.literal_eval(stripped)
    return stripped
  except (ValueError, SyntaxError):
    return repr(value)  # bare words are strings: --gin.MODEL_DIR=/tmp/run, --gin.MODEL_DIR=2024_run


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--gin.NAME=VALUE` arguments (as gin bindings) from the other arguments."""
  rest, bindings = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep:
        raise SystemExit(f"error: {arg!r} needs a value: --gin.NAME=VALUE")
      bindings.append(f"{name} = {_gin_value(value)}")
    else:
      rest.append(arg)
  return rest, bindings


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = (),
              allow_required: bool = False) -> None:
  """Parses gin files and bindings; exits with a clear message naming a bad file or binding, or a
  `%gin.REQUIRED` macro left unset (unless `allow_required`, for checking a run-type file alone)."""
  _search_gin_root_first()
  for path in search_paths:
    gin.add_config_file_search_path(path)
  if not files:
    raise SystemExit("error: give at least one --gin_file (e.g. gin_configs/experiments/tiny.gin)")
  roots = [pathlib.Path.cwd(), GIN_ROOT, *map(pathlib.Path, search_paths)]
  missing_files = [f for f in files if not any((root / f).is_file() for root in roots)]
  if missing_files:
    _fail(f"gin file not found: {missing_files} (looked in the working directory, {GIN_ROOT} and the search paths)")
  quiet = _DropGinSearchNoise()
  logging.getLogger().addFilter(quiet)
  try:
    gin.parse_config_files_and_bindings(list(files), None, finalize_config=False)
  except (ValueError, KeyError, SyntaxError, OSError, TypeError) as e:
    # TypeError: gin's package-resource reader fails on a file that does not exist when the working directory
    # holds a directory of the same first name (a namespace package), instead of reporting it missing.
    _fail(f"bad gin configuration in {list(files)}: {e}")
  finally:
    logging.getLogger().removeFilter(quiet)
  macros = set(re.findall(r"^(\w+) = ", gin.config_str(), flags=re.M))
  for binding in bindings:
    name = binding.split("=", 1)[0].strip()
    if "." not in name and "/" not in name and name not in macros:
      _fail(f"--gin.{name}: no gin file defines a macro {name!r}; defined macros: {sorted(macros)}")
    try:
      gin.parse_config(binding)
    except (ValueError, KeyError, SyntaxError) as e:
      _fail(f"bad binding --gin.{binding}: {e}")
  missing = re.findall(r"^(\w+) = %gin\.REQUIRED$", gin.config_str(), flags=re.M)
  if missing and not allow_required:
    hint = " ".join(f"--gin.{m}=..." for m in missing)
    _fail(f"these gin macros are required and not set: {', '.join(missing)} (e.g. {hint})")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  raise SystemExit(2)


def bound_arguments(fn: Any, name: str, params: Sequence[str]) -> dict[str, Any]:
  """The values gin would pass `fn` (registered as `name`) for `params`: each one's binding (references
  evaluated), else the parameter's default. ValueError naming a parameter that has neither."""
  signature = inspect.signature(fn)
  out = {}
  for param in params:
    try:
      value = gin.query_parameter(f"{name}.{param}")
    except ValueError:
      default = signature.parameters[param].default
      if default is inspect.Parameter.empty:
        raise ValueError(f"{name}.{param} is not bound: give the gin files of the run") from None
      out[param] = default
      continue
    # Evaluated outside the try: a bound value that fails (a config refusing its fields) says why itself.
    out[param] = value.scoped_configurable_fn() if isinstance(value, gin.config.ConfigurableReference) else value
  return out


def query(name: str):
  """The value bound to `name` (`train.model_dir`, or a macro such as `MODEL`), references evaluated."""
  value = gin.query_parameter(name if "." in name else f"{name}/gin.macro.value")
  return value.scoped_configurable_fn() if isinstance(value, gin.config.ConfigurableReference) else value


class _DropGinSearchNoise(logging.Filter):
  """gin logs every search-path probe of an `include` ('system_path_file_exists:', and 'Path not found' for
  each miss, even when a later path hits)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Path not found:", "system_path_file_exists:"))
