"""Named presets, read from their one definition: the gin files under `gin_configs/models/`.

    cfg = model_preset("palm_8b", vocab_size=1024)     # gin_configs/models/palm_8b.gin's MODEL, a field replaced
    codec = codec_preset("demo_16khz")                  # gin_configs/models/codec/demo_16khz.gin's CODEC
    model_presets(), codec_presets()                    # the names there are

For code outside gin (benchmarks, tests): entry points include the same files. Reading a preset parses its file
into gin's global config and clears that config again, so call these where no other gin config is in use.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gin

from audiopalm.cli.gin_flags import GIN_ROOT, parse_gin, query
from audiopalm.codec.config import CodecConfig
from audiopalm.main import configurables  # noqa: F401  (TransformerConfig, CodecConfig in gin)
from audiopalm.model import TransformerConfig

_MODELS = GIN_ROOT / "models"
_NOT_PRESETS = ("base",)  # the architecture file every size includes


def model_presets() -> list[str]:
  return sorted(p.stem for p in _MODELS.glob("*.gin") if p.stem not in _NOT_PRESETS)


def codec_presets() -> list[str]:
  return sorted(p.stem for p in (_MODELS / "codec").glob("*.gin"))


@functools.lru_cache(maxsize=None)
def _read(path: str, macro: str) -> Any:
  gin.clear_config()
  try:
    parse_gin([path], [])
    return query(macro)
  finally:
    gin.clear_config()


def model_preset(name: str, **overrides: Any) -> TransformerConfig:
  """The decoder of `gin_configs/models/<name>.gin`, with fields replaced."""
  if name not in model_presets():
    raise ValueError(f"unknown model preset {name!r}; choose one of {model_presets()} (gin_configs/models/)")
  return dataclasses.replace(_read(f"models/{name}.gin", "MODEL"), **overrides)


def codec_preset(name: str, **overrides: Any) -> CodecConfig:
  """The codec of `gin_configs/models/codec/<name>.gin`, with fields replaced."""
  if name not in codec_presets():
    raise ValueError(f"unknown codec preset {name!r}; choose one of {codec_presets()} (gin_configs/models/codec/)")
  return dataclasses.replace(_read(f"models/codec/{name}.gin", "CODEC"), **overrides)
