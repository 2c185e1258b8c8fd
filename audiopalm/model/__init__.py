"""The PaLM-style decoder: `Transformer(cfg)`, its config, loss and decoding cache."""

from audiopalm.model.config import TransformerConfig, flops_per_token, param_count
from audiopalm.model.kv_cache import KVCache, cache_logical_axes, init_cache
from audiopalm.model.loss import cross_entropy_with_z_loss
from audiopalm.model.transformer import Transformer

__all__ = ["KVCache", "Transformer", "TransformerConfig", "cache_logical_axes", "cross_entropy_with_z_loss",
           "flops_per_token", "init_cache", "param_count"]
