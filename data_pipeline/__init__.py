"""Tokenization of audio corpora into sharded TFRecords of semantic and acoustic tokens (to come)."""
