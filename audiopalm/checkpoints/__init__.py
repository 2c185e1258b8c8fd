"""The checkpoint layer: what training, inference, the Hugging Face bridge and the codec read and write.

  `manager.py`   orbax checkpoints of a training state + data-iterator state (`Checkpointer`), exact resume
  `export.py`    params-only exports (`params/` + `model_config.json` [+ `vocab_spec.json`])
  `source.py`    "find and load a source": an export or a run directory, its config, spec and parameters
"""
