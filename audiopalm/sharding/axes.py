"""Logical axis names: the single list of names used on parameters and activations.

Model code tags every parameter and the main activations with these names. The
rules that map them to mesh axes live in config (`ShardingRules`), never here.
"""

# Parameter axes.
VOCAB = "vocab"  # vocabulary rows of the embedding / output layer
EMBED = "embed"  # model dimension (d_model) of a weight
MLP = "mlp"  # hidden dimension of the feed-forward layer (d_ff)
HEADS = "heads"  # query heads
KV_HEADS = "kv_heads"  # key/value heads (1 for multi-query attention)
HEAD_DIM = "head_dim"  # per-head dimension
NORM = "norm"  # the scale vector of a normalisation layer
LAYERS = "layers"  # the stacked-layer axis created by scanning over layers

# Activation axes.
ACT_BATCH = "activation_batch"
ACT_LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_KV_HEADS = "activation_kv_heads"
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"

PARAM_AXES = (VOCAB, EMBED, MLP, HEADS, KV_HEADS, HEAD_DIM, NORM, LAYERS)
ACTIVATION_AXES = (ACT_BATCH, ACT_LENGTH, ACT_EMBED, ACT_HEADS, ACT_KV_HEADS, ACT_MLP, ACT_VOCAB)
ALL_AXES = PARAM_AXES + ACTIVATION_AXES
