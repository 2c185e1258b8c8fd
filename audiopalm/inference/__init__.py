"""Autoregressive generation from the decoder: KV-cached decoding, sampling, modality constraints."""

from audiopalm.inference.decode import cache_shardings, generate
from audiopalm.inference.sampling import SamplingConfig, allowed_mask, sample, top_k_filter, top_p_filter

__all__ = ["SamplingConfig", "allowed_mask", "cache_shardings", "generate", "sample", "top_k_filter", "top_p_filter"]
