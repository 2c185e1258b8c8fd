"""What every training entry point does: flags, logging, gin, multi-host init, the run, config files.

    python -m audiopalm.<entry> --gin_file=... [--gin.NAME=VALUE ...] \
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I | --distributed_auto]

`config.gin` (everything bound) is written to the run's directory before the run and
`operative_config.gin` (what was actually used) after it, by process 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

import gin
import jax

from audiopalm.cli.gin_flags import add_gin_flags, parse_gin, query, split_gin_bindings
from audiopalm.cli.logging_setup import setup_logging
from audiopalm.files import storage
from audiopalm.sharding.distributed import DistributedConfig, initialize


def run(prog: str, description: str, run_fn: Callable[[], Any], model_dir_binding: str,
        argv: list[str] | None = None) -> Any:
  """Parses flags and gin, initialises JAX's multi-host runtime, calls `run_fn()` and returns its result."""
  args, bindings = split_gin_bindings(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_gin_flags(parser)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--distributed_auto", action="store_true", default=None)
  flags = parser.parse_args(args)

  setup_logging()
  parse_gin(flags.gin_file, bindings, flags.gin_search_path)
  initialize(DistributedConfig.from_env(coordinator_address=flags.coordinator_address,
                                        num_processes=flags.num_processes, process_id=flags.process_id,
                                        auto=flags.distributed_auto))
  gin.finalize()
  model_dir = query(model_dir_binding)
  _write_config(model_dir, "config.gin", gin.config_str())
  result = run_fn()
  _write_config(model_dir, "operative_config.gin", gin.operative_config_str())
  logging.info("Done: %s", result)
  return result


def _write_config(model_dir: str, name: str, text: str) -> None:
  if jax.process_index() == 0:
    storage.write_text(storage.join(model_dir, name), text)
