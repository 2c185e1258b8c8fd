"""What every training entry point does: flags, logging, gin, multi-host init, the run, config files.

    python -m audiopalm.<entry> --gin_file=... [--gin.NAME=VALUE ...] \
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I | --distributed_auto]

`config.gin` (everything bound) is written to the run's directory before the run and
`operative_config.gin` (what was actually used) after it, by process 0. `--heartbeat_timeout_s` bounds how long
the processes of a multi-process run wait for one that died. For training runs JAX's persistent compilation cache
is on, in `<model_dir>/compilation_cache` (local or gs://; `--compilation_cache_dir=DIR` elsewhere, `none` to
turn it off), so a restart loads its programs instead of compiling them (JAX writes entries from process 0
only); other entry points use it only when `--compilation_cache_dir` is given. In a multi-process run, an error
in one process ends it at once with exit status 1 (after logging the error), rather than in JAX's shutdown
barrier: the others then stop within the heartbeat timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable

import gin
import jax

from audiopalm.cli.gin_flags import add_gin_flags, parse_gin, query, split_gin_bindings
from audiopalm.cli.logging_setup import setup_logging
from audiopalm.files import storage
from audiopalm.sharding.distributed import DistributedConfig, initialize


def run(prog: str, description: str, run_fn: Callable[[], Any], model_dir_binding: str,
        argv: list[str] | None = None, compilation_cache: bool = False) -> Any:
  """Parses flags and gin, initialises JAX's multi-host runtime, calls `run_fn()` and returns its result.
  `compilation_cache`: JAX's persistent compilation cache defaults to `<model_dir>/compilation_cache` (training
  runs); otherwise it is off unless `--compilation_cache_dir` is given."""
  args, bindings = split_gin_bindings(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_gin_flags(parser)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--distributed_auto", action="store_true", default=None)
  parser.add_argument("--heartbeat_timeout_s", type=int, default=None,
                      help="seconds before the processes of a multi-process run give up on one that died")
  parser.add_argument("--compilation_cache_dir", default=None,
                      help="JAX's persistent compilation cache (training runs: <model_dir>/compilation_cache by "
                           "default; 'none': off)")
  flags = parser.parse_args(args)

  setup_logging()
  parse_gin(flags.gin_file, bindings, flags.gin_search_path)
  initialize(DistributedConfig.from_env(coordinator_address=flags.coordinator_address,
                                        num_processes=flags.num_processes, process_id=flags.process_id,
                                        auto=flags.distributed_auto, heartbeat_timeout_s=flags.heartbeat_timeout_s))
  gin.finalize()
  model_dir = query(model_dir_binding)
  if compilation_cache or flags.compilation_cache_dir is not None:
    enable_compilation_cache(flags.compilation_cache_dir, model_dir)
  _write_config(model_dir, "config.gin", gin.config_str())
  try:
    result = run_fn()
  except Exception:  # pylint: disable=broad-exception-caught
    if jax.process_count() == 1:
      raise
    logging.exception("Process %d of %d failed; exiting with status 1 now (the others stop within the heartbeat "
                      "timeout). If a collective failed, another process died (killed, or its host lost): restart "
                      "the run on the processes you have, it resumes from the newest checkpoint",
                      jax.process_index(), jax.process_count())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # not through JAX's shutdown barrier, where the others would wait for this process
  _write_config(model_dir, "operative_config.gin", gin.operative_config_str())
  logging.info("Done: %s", result)
  return result


COMPILATION_CACHE_DIR = "compilation_cache"


def enable_compilation_cache(directory: str | None, model_dir: str) -> str | None:
  """Turns on JAX's persistent compilation cache in `directory` (None: `<model_dir>/compilation_cache`; 'none':
  off); returns the directory used."""
  if directory is None:
    directory = storage.join(model_dir, COMPILATION_CACHE_DIR)
  if directory.lower() in ("", "none"):
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  logging.info("Persistent compilation cache: %s", directory)
  return directory


def _write_config(model_dir: str, name: str, text: str) -> None:
  if jax.process_index() == 0:
    storage.write_text(storage.join(model_dir, name), text)
