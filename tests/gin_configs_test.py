"""Every gin file parses; the presets are the model gin files; bad bindings fail clearly."""

import pathlib
import shlex
import subprocess
import sys

import gin
import pytest

from audiopalm.cli.gin_flags import GIN_ROOT, parse_gin, query, split_gin_bindings
from audiopalm.codec.config import CodecConfig
from audiopalm.main import fit_kmeans, pretrain_hubert, train, train_codec, train_unit_encoder  # noqa: F401  (entry functions)
from audiopalm.main.presets import codec_preset, codec_presets, model_preset, model_presets
from audiopalm.model import TransformerConfig
from data_pipeline import configurables as _tokenize_configurables  # noqa: F401

ALL_GIN_FILES = sorted(str(p.relative_to(GIN_ROOT)) for p in GIN_ROOT.rglob("*.gin"))


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_there_are_gin_files_in_every_layer():
  layers = {f.split("/")[0] for f in ALL_GIN_FILES}
  assert {"models", "runs", "experiments"} <= layers


@pytest.mark.parametrize("name", ALL_GIN_FILES)
def test_gin_file_parses(name):
  model = "models/codec/demo_16khz.gin" if "codec" in name else "models/tiny.gin"
  files = [name] if not name.startswith("runs/") else [model, name]  # a run needs a model
  experiment = name.startswith("experiments/")
  first = (GIN_ROOT / name).read_text().splitlines()[0]
  runnable = first.startswith("# python -m ")  # experiments, and job files such as tokenize/*.gin
  if experiment:
    assert name.count("/") == 1
    assert runnable, f"{name} must start with the command that runs it"
  # The command in a runnable file's header must bind every macro the file leaves REQUIRED.
  bindings = split_gin_bindings(shlex.split(first[2:]))[1] if runnable else []
  parse_gin(files, bindings, allow_required=not runnable)


def test_presets_are_the_model_gin_files():
  """A preset is written once, as a gin file; `model_preset` / `codec_preset` read it for code outside gin."""
  assert model_presets() == ["demo", "gemma2_9b", "gemma3_4b", "llama3_1_8b", "palm_1b", "palm_8b", "qwen2_5_7b",
                             "qwen3_8b", "tiny"]
  assert codec_presets() == ["demo_16khz", "encodec_24khz", "soundstream_16khz", "soundstream_24khz", "tiny"]
  tiny = model_preset("tiny")
  assert tiny == TransformerConfig(vocab_size=512, d_model=128, num_layers=2, num_heads=4, num_kv_heads=1,
                                   head_dim=32, d_ff=512)
  assert model_preset("demo") == tiny.replace(num_layers=4)  # models/demo.gin includes models/tiny.gin
  assert model_preset("palm_8b", vocab_size=1024).vocab_size == 1024
  assert codec_preset("soundstream_16khz") == CodecConfig()  # CodecConfig's defaults are AudioLM's SoundStream
  assert codec_preset("demo_16khz").codebook_size == 256
  with pytest.raises(ValueError, match="unknown model preset 'palm_9b'; choose one of"):
    model_preset("palm_9b")
  with pytest.raises(ValueError, match="unknown codec preset 'nope'"):
    codec_preset("nope")


def test_cli_bindings_are_quoted_when_bare():
  _, bindings = split_gin_bindings(["--gin.MODEL_DIR=/tmp/run", "--gin.TRAIN_STEPS=5", "--gin.X='a'",
                                    "--gin.M=%OTHER", "--gin.LR=.5", "--gin.LR=+1e-3", "--gin.DIR=2024_run",
                                    "--gin.D={'data': 2}", "--gin.N=-3", "--gin.E=a=b", "--gin_file=x.gin"])
  assert bindings == ["MODEL_DIR = '/tmp/run'", "TRAIN_STEPS = 5", "X = 'a'", "M = %OTHER", "LR = .5",
                      "LR = +1e-3", "DIR = '2024_run'", "D = {'data': 2}", "N = -3", "E = 'a=b'"]


def test_cli_values_reach_the_config():
  _, bindings = split_gin_bindings(["--gin.MODEL_DIR=2024_run", "--gin.OptimizerConfig.peak_lr=.5",
                                    "--gin.MeshConfig.ici={'data': 2, 'fsdp': -1}"])
  parse_gin(["experiments/tiny.gin"], bindings)
  assert query("MODEL_DIR") == "2024_run"
  assert query("OptimizerConfig.peak_lr") == 0.5
  assert query("MeshConfig.ici") == {"data": 2, "fsdp": -1}


def test_misspelt_macro_fails_naming_it(capsys):
  with pytest.raises(SystemExit):
    parse_gin(["experiments/tiny.gin"], ["MODEL_DIR = '/tmp/x'", "TRAIN_STEP = 5"])
  assert "TRAIN_STEP" in capsys.readouterr().err


def test_misspelt_binding_fails_naming_it(capsys):
  with pytest.raises(SystemExit) as exit_info:
    parse_gin(["experiments/tiny.gin"], ["TransformerConfig.d_modle = 64"])
  assert exit_info.value.code == 2
  assert "d_modle" in capsys.readouterr().err


def test_unknown_configurable_fails_naming_it(capsys):
  with pytest.raises(SystemExit):
    parse_gin(["experiments/tiny.gin"], ["TransformrConfig.d_model = 64"])
  assert "TransformrConfig" in capsys.readouterr().err


def test_missing_required_macro_fails_naming_it(capsys):
  with pytest.raises(SystemExit):
    parse_gin(["experiments/tiny.gin"], [])
  assert "MODEL_DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_rejects_bad_mesh_before_compiling(tmp_path):
  """Mesh sizes that do not divide the device count fail with a message naming them (no compile)."""
  cmd = [sys.executable, "-m", "audiopalm.main.train", "--gin_file=gin_configs/experiments/tiny.gin",
         f"--gin.MODEL_DIR={tmp_path}", "--gin.MeshConfig.ici={'data': 3, 'fsdp': 1, 'tensor': 1}"]
  proc = subprocess.run(cmd, cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode != 0
  assert "uses 3 devices but" in proc.stderr
  assert not (tmp_path / "checkpoints").exists()
