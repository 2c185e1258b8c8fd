"""Codec checkpoints: a directory with `codec_config.json` and an orbax checkpoint of the variables.

    save_codec(path, config, variables)     # local or gs://
    codec = load_codec(path)                # a project codec, or a transformers EnCodec directory

Only what inference reads is saved (`model.inference_variables`: the weights and the codebook entries, not
the EMA statistics, which live in the trainer's own checkpoints). The config is written first and the orbax save is atomic (orbax writes to a temporary directory and renames
it when complete), so a crash mid-save leaves no `variables/` that looks complete, and `load_codec` refuses a
directory without one. Loading restores into the shapes the config implies, so a config that does not match
the weights fails with the offending parameter named.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import orbax.checkpoint as ocp

from audiopalm.codec.config import CodecConfig
from audiopalm.codec.model import Codec, inference_variables, init_variables
from audiopalm.files.paths import absolute

CONFIG_FILE = "codec_config.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 1


def config_to_json(config: CodecConfig) -> str:
  return json.dumps({"format_version": FORMAT_VERSION, "config": dataclasses.asdict(config)}, indent=2)


def config_from_json(text: str, source: str = "<string>") -> CodecConfig:
  data = json.loads(text)
  if data.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{source}: unsupported codec checkpoint format {data.get('format_version')!r} "
                     f"(this code reads version {FORMAT_VERSION})")
  fields = {f.name for f in dataclasses.fields(CodecConfig)}
  unknown = sorted(set(data["config"]) - fields)
  if unknown:
    raise ValueError(f"{source}: unknown codec config fields {unknown}")
  return CodecConfig(**data["config"])


def save_codec(path: str, config: CodecConfig, variables: dict[str, Any]) -> None:
  """Write config and the inference variables to `path` (which must not hold a codec yet)."""
  root = absolute(path)
  if (root / VARIABLES_DIR).exists():
    raise FileExistsError(f"{root / VARIABLES_DIR} exists: refusing to overwrite a codec checkpoint")
  root.mkdir(parents=True, exist_ok=True)
  (root / CONFIG_FILE).write_text(config_to_json(config))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(root / VARIABLES_DIR, jax.device_get(inference_variables(variables)))


def load_codec(path: str) -> Codec:
  """A codec from a project checkpoint directory or from a `transformers` EnCodec directory."""
  root = absolute(path)
  if (root / CONFIG_FILE).exists():
    config = config_from_json((root / CONFIG_FILE).read_text(), str(root / CONFIG_FILE))
    if not (root / VARIABLES_DIR).exists():
      raise FileNotFoundError(f"{root} has {CONFIG_FILE} but no complete {VARIABLES_DIR}/ (an interrupted save?)")
    abstract = jax.eval_shape(lambda: inference_variables(init_variables(config, jax.random.key(0))))
    with ocp.StandardCheckpointer() as checkpointer:
      variables = checkpointer.restore(root / VARIABLES_DIR, abstract)
    return Codec(config, variables)
  if (root / "config.json").exists():
    from audiopalm.codec import encodec_import  # pylint: disable=import-outside-toplevel
    return encodec_import.load_encodec(path)
  raise FileNotFoundError(f"{root} is neither a codec checkpoint ({CONFIG_FILE}) nor a transformers EnCodec "
                          "directory (config.json)")
