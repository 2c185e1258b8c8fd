"""Console logging for entry points: our INFO lines, quiet third-party noise."""

import logging
import os


def setup_logging(level: int = logging.INFO) -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s] %(message)s", datefmt="%H:%M:%S",
                      force=True)
  for noisy in ("absl", "orbax", "jax", "tensorflow", "grain", "etils"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
