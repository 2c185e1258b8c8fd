"""Gin registration of the public constructors.

The library does not import gin; entry points import this module, which makes the public config dataclasses
configurable under short names (`TransformerConfig.d_model = 512`, `SpeechTextConfig.seq_len = 1024`, ...). Each
entry point registers its own function (`train.model_dir = %MODEL_DIR` binds `audiopalm.main.train.train`).
"""

import gin

from audiopalm.checkpoints import manager as checkpoints
from audiopalm.codec import audio_crops
from audiopalm.codec import config as codec_config
from audiopalm.codec import discriminators, gan_step
from audiopalm.codec import trainer as codec_trainer
from audiopalm.data import mixture, speech_text_source, text_source
from audiopalm.evaluation import eval_hook
from audiopalm.formats import audiolm_stages, audiopalm_tasks
from audiopalm.model import config as model_config
from audiopalm.semantic import ctc_train
from audiopalm.semantic import fit as semantic_fit
from audiopalm.semantic import hubert_pretrain
from audiopalm.semantic import kmeans
from audiopalm.sharding import mesh, rules
from audiopalm.ssl import ctc_encoder, hubert
from audiopalm.tokenizers import base as tokenizers
from audiopalm.training import init_from, loss_guard, optimizer, param_groups, train_step, trainer
from audiopalm.vocab import build as vocab_build

# Public constructors.
TransformerConfig = gin.external_configurable(model_config.TransformerConfig, "TransformerConfig")
model_config_from = gin.external_configurable(model_config.config_from, "model_config_from")
MeshConfig = gin.external_configurable(mesh.MeshConfig, "MeshConfig")
ShardingRules = gin.external_configurable(rules.ShardingRules, "ShardingRules")
OptimizerConfig = gin.external_configurable(optimizer.OptimizerConfig, "OptimizerConfig")
TrainStepConfig = gin.external_configurable(train_step.TrainStepConfig, "TrainStepConfig")
CheckpointConfig = gin.external_configurable(checkpoints.CheckpointConfig, "CheckpointConfig")
TrainerConfig = gin.external_configurable(trainer.TrainerConfig, "TrainerConfig")
EvalConfig = gin.external_configurable(eval_hook.EvalConfig, "EvalConfig")
LossGuardConfig = gin.external_configurable(loss_guard.LossGuardConfig, "LossGuardConfig")
InitFromConfig = gin.external_configurable(init_from.InitFromConfig, "InitFromConfig")
ParamGroupsConfig = gin.external_configurable(param_groups.ParamGroupsConfig, "ParamGroupsConfig")
TextSourceConfig = gin.external_configurable(text_source.TextSourceConfig, "TextSourceConfig")
SpeechTextConfig = gin.external_configurable(speech_text_source.SpeechTextConfig, "SpeechTextConfig")
MixtureComponent = gin.external_configurable(mixture.MixtureComponent, "MixtureComponent")
VocabConfig = gin.external_configurable(vocab_build.VocabConfig, "VocabConfig")
# Format configs (a mixture component's `config`), under their class names: AsrConfig, CoarseAcousticConfig, ...
FORMAT_CONFIGS = {cls.__name__: gin.external_configurable(cls, cls.__name__) for cls in (
    audiopalm_tasks.AsrConfig, audiopalm_tasks.TtsConfig, audiopalm_tasks.ContinuationConfig,
    audiopalm_tasks.TextLmConfig, audiopalm_tasks.InterleavedConfig, audiopalm_tasks.AstConfig,
    audiopalm_tasks.S2stConfig, audiopalm_tasks.CombinedConfig, audiolm_stages.SemanticLMConfig,
    audiolm_stages.CoarseAcousticConfig, audiolm_stages.FineAcousticConfig)}
CodecConfig = gin.external_configurable(codec_config.CodecConfig, "CodecConfig")
AudioCropsConfig = gin.external_configurable(audio_crops.AudioCropsConfig, "AudioCropsConfig")
DiscriminatorConfig = gin.external_configurable(discriminators.DiscriminatorConfig, "DiscriminatorConfig")
CodecLossConfig = gin.external_configurable(gan_step.CodecLossConfig, "CodecLossConfig")
CodecOptimizerConfig = gin.external_configurable(gan_step.CodecOptimizerConfig, "CodecOptimizerConfig")
CodecTrainerConfig = gin.external_configurable(codec_trainer.CodecTrainerConfig, "CodecTrainerConfig")
KMeansConfig = gin.external_configurable(kmeans.KMeansConfig, "KMeansConfig")
FeatureDumpConfig = gin.external_configurable(semantic_fit.FeatureDumpConfig, "FeatureDumpConfig")
HubertConfig = gin.external_configurable(hubert.HubertConfig, "HubertConfig")
HubertPretrainConfig = gin.external_configurable(hubert_pretrain.HubertPretrainConfig, "HubertPretrainConfig")
CtcEncoderConfig = gin.external_configurable(ctc_encoder.CtcEncoderConfig, "CtcEncoderConfig")
CtcTrainConfig = gin.external_configurable(ctc_train.CtcTrainConfig, "CtcTrainConfig")
load_tokenizer = gin.external_configurable(tokenizers.load_tokenizer, "load_tokenizer")
