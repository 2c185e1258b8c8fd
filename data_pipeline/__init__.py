"""Tokenization of audio corpora into sharded TFRecords of semantic and acoustic tokens.

`python -m data_pipeline.tokenize --gin_file=gin_configs/tokenize/<corpus>.gin ...` runs `job.tokenize_corpus`:
corpus readers (`readers/`) → audio preparation (`audio_prep`, `vad`, `audio_source`) → length-bucketed device
batches through both tokenizers (`batching`) → atomic TFRecord shards (`audiopalm.tokens.shards`) + dataset
metadata (`audiopalm.tokens.dataset_info`), resumable and multi-host.
"""
