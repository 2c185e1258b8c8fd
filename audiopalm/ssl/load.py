"""Loading a speech encoder from a directory by the type its config names.

    encoder = load_encoder("/path/to/hubert")     # HuBERT, w2v-BERT 2.0 (transformers directories), MFCC or
                                                  # the CTC-trained unit encoder

Each encoder meets the contract of `audiopalm.ssl.encoder.SslEncoder`.
"""

from __future__ import annotations

from audiopalm.hf.tensors import read_config
from audiopalm.ssl import ctc_encoder, hubert_import, mfcc, w2v_bert_import
from audiopalm.ssl.encoder import SslEncoder


def load_encoder(directory: str) -> SslEncoder:
  """An encoder from a `transformers` directory (config.json + weights + preprocessor_config.json), or an MFCC
  front end (`audiopalm.ssl.mfcc.save_mfcc_encoder`: config.json only), or a CTC-trained unit encoder
  (`audiopalm.ssl.ctc_encoder.save_ctc_encoder`)."""
  config = read_config(directory)
  model_type = config.get("model_type")
  if model_type == "hubert":
    return hubert_import.load_hubert(directory)
  if model_type == "wav2vec2-bert":
    return w2v_bert_import.load_w2v_bert(directory)
  if model_type == "audiopalm-mfcc":
    return mfcc.load_mfcc(directory, config)
  if model_type == ctc_encoder.MODEL_TYPE:
    return ctc_encoder.load_ctc_encoder(directory, config)
  raise ValueError(f"{directory}: model_type {model_type!r} is not a supported speech encoder "
                   "(supported: 'hubert', 'wav2vec2-bert', 'audiopalm-mfcc', 'audiopalm-ctc')")
