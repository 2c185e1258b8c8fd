"""The PaLM-style decoder: `Transformer(cfg)`, its config, presets, loss and decoding cache."""

from audiopalm.model.config import PRESETS, TransformerConfig, flops_per_token, param_count, preset
from audiopalm.model.kv_cache import KVCache, cache_logical_axes, init_cache
from audiopalm.model.loss import cross_entropy_with_z_loss
from audiopalm.model.transformer import Transformer

__all__ = ["KVCache", "PRESETS", "Transformer", "TransformerConfig", "cache_logical_axes", "cross_entropy_with_z_loss",
           "flops_per_token", "init_cache", "param_count", "preset"]
