"""seqio Tasks and Mixtures over token datasets, for T5X-style users of the same formats.

    # my_tasks.py, imported by T5X (--gin.MIXTURE_OR_TASK_MODULE="my_tasks"):
    from audiopalm.data import seqio_tasks
    from audiopalm.data.mixture import MixtureComponent, component_seed
    seqio_tasks.register(SpeechTextConfig(components=(MixtureComponent("asr", "gs://b/tokens", rate=0.6),
                                                      MixtureComponent("tts", "gs://b/tokens", rate=0.4))),
                         prefix="librilight")
    # → Tasks 'librilight_asr', 'librilight_tts' and the Mixture 'librilight' (rates 0.6 / 0.4)

Each Task reads the dataset's TFRecord shards (`seqio.TFExampleDataSource`, every split the dataset has, not
only the component's `split`; file-level sharding between hosts), and its preprocessor runs the same format
function as the grain loader (`audiopalm.formats`, through `tf.numpy_function`): deterministic formats give
the same sequences on both paths (a test checks it). Differences: per-example randomness (crops, prefix
draws) is seeded by (seed, component, example id), so it repeats from epoch to epoch, unlike the grain
loader's; sequences longer than a row are not dropped here (T5X's feature converters trim them). Features,
for T5X's prefix-LM / decoder feature converters:

    inputs   the prompt: the tokens before the first one with a loss weight > 0 (task tag, conditioning)
    targets  the rest (the output, ending with EOS)

Token ids are already combined-vocabulary ids (`seqio.PassThroughVocabulary` of the spec's size, no EOS
added). T5X trains targets with weight 1 and inputs with 0, so formats whose weights are not of that shape
(prompt_weight != 0, or output_weight != 1) are refused here.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from audiopalm.data.mixture import MixtureComponent, component_seed
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.formats.base import get_format
from audiopalm.tokens import dataset_info, schema, shards


def _check_weights(component: MixtureComponent) -> None:
  config = component.resolved_config
  prompt, output = getattr(config, "prompt_weight", 0.0), getattr(config, "output_weight", 1.0)
  if prompt != 0.0 or output != 1.0:
    raise ValueError(f"seqio task {component.label!r}: prompt_weight {prompt} / output_weight {output} cannot be "
                     "expressed as T5X inputs/targets (weights 0 / 1); use the grain loader for other weights")


def format_preprocessor(component: MixtureComponent, vocab: Any, base_seed: int = 0):
  """A seqio preprocessor: parsed examples → {"inputs", "targets"} sequences of `component`'s format."""
  fn = get_format(component.format, component.config)

  def run(*values):
    example = schema.example_from_features(dict(zip(schema.FEATURE_NAMES, values)))
    rng = np.random.default_rng([base_seed, zlib.crc32(example["id"].encode("utf-8"))])
    seqs = [s for s in fn(example, vocab, rng) if len(s)]
    tokens = np.concatenate([s.tokens for s in seqs]).astype(np.int32) if seqs else np.zeros(0, np.int32)
    weights = np.concatenate([s.weights for s in seqs]).astype(np.float32) if seqs else np.zeros(0, np.float32)
    return tokens, weights, np.asarray([len(s) for s in seqs], np.int64)

  def split(tokens: tf.Tensor, weights: tf.Tensor) -> dict[str, tf.Tensor]:
    weighted = tf.cast(weights > 0, tf.int32)  # [n]
    prompt = tf.where(tf.reduce_any(weights > 0), tf.argmax(weighted, output_type=tf.int32), tf.size(tokens))
    return {"inputs": tokens[:prompt], "targets": tokens[prompt:]}

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    def to_sequences(ex):
      args = [ex[k] for k in schema.FEATURE_NAMES]
      tokens, weights, lengths = tf.numpy_function(run, args, (tf.int32, tf.float32, tf.int64), stateful=False)
      tokens.set_shape([None])
      weights.set_shape([None])
      lengths.set_shape([None])
      seqs = {"tokens": tf.RaggedTensor.from_row_lengths(tokens, lengths),
              "weights": tf.RaggedTensor.from_row_lengths(weights, lengths)}
      return tf.data.Dataset.from_tensor_slices(seqs).map(lambda s: split(s["tokens"], s["weights"]))

    return dataset.flat_map(to_sequences)

  return preprocess


def register(config: SpeechTextConfig, prefix: str = "audiopalm", replace: bool = False) -> list[str]:
  """Registers one seqio Task per mixture component ('<prefix>_<label>') and a Mixture '<prefix>' with the
  components' rates; returns the task names. `replace`: remove earlier registrations of the same names."""
  vocab = config.vocab
  features = {k: seqio.Feature(seqio.PassThroughVocabulary(vocab.spec.size, eos_id=vocab.spec.text.eos_id),
                               add_eos=False, dtype=tf.int32) for k in ("inputs", "targets")}
  names = []
  for i, component in enumerate(config.components):
    _check_weights(component)
    meta = dataset_info.read_metadata(component.dataset)
    patterns = {split: f"{component.dataset}/{meta.dataset_name}-{split}.{shards.FILE_FORMAT}-*-of-*"
                for split in meta.splits}
    counts = {split: sum(s.examples for s in meta.split_shards(split)) for split in meta.splits}
    name = f"{prefix}_{component.label}"
    if replace:
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.TFExampleDataSource(patterns, schema.feature_spec(), num_input_examples=counts),
        preprocessors=[format_preprocessor(component, vocab, component_seed(config.seed, i))], output_features=features)
    names.append(name)
  if replace:
    seqio.MixtureRegistry.remove(prefix)
  seqio.MixtureRegistry.add(prefix, [(n, c.rate) for n, c in zip(names, config.components)])
  return names
