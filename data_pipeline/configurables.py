"""Gin registration for the tokenization job (kept apart from `audiopalm.main.configurables`, so that the training
entry points do not import TensorFlow)."""

import gin

from audiopalm.main import configurables as _audiopalm  # noqa: F401  (tokenizer configurables)
from data_pipeline import audio_prep, batching, claims, job, vad

AudioPrepConfig = gin.external_configurable(audio_prep.AudioPrepConfig, "AudioPrepConfig")
VadConfig = gin.external_configurable(vad.VadConfig, "VadConfig")
BucketConfig = gin.external_configurable(batching.BucketConfig, "BucketConfig")
JobConfig = gin.external_configurable(job.JobConfig, "JobConfig")
LeaseConfig = gin.external_configurable(claims.LeaseConfig, "LeaseConfig")

# Entry-point function.
tokenize_corpus = gin.external_configurable(job.tokenize_corpus, "tokenize_corpus")
