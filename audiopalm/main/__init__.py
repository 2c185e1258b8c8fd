"""The library's entry points: each a thin `python -m audiopalm.main.<name>` over library functions.

  train              train or continue a decoder (`gin_configs/experiments/*.gin`)
  train_codec        train a SoundStream-style codec
  fit_kmeans         fit a semantic tokenizer (SSL encoder layer + k-means)
  import_text        a text corpus as a text-only token dataset
  import_checkpoint  a Hugging Face causal LM (or a run) as the stack's params + config + vocabulary
  export_checkpoint  trained models for fine-tuning: orbax + Hugging Face checkpoints, tokenizers, manifest
  evaluate           held-out perplexity, ASR, TTS round trip, codec and semantic resynthesis
  generate           ASR / TTS / continuation with the trained models
  pipeline           the main job: every step above on the embedded default, resumable

Tokenization is the application `data_pipeline` (`python -m data_pipeline.tokenize`); benchmarks and developer
utilities are in `tools/`.
"""
