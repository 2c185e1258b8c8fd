"""The PaLM-style decoder: `Transformer(cfg)`, its config, presets and loss."""

from audiopalm.model.config import PRESETS, TransformerConfig, flops_per_token, param_count, preset
from audiopalm.model.loss import cross_entropy_with_z_loss
from audiopalm.model.transformer import Transformer

__all__ = ["PRESETS", "Transformer", "TransformerConfig", "cross_entropy_with_z_loss", "flops_per_token",
           "param_count", "preset"]
