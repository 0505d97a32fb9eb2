"""Official release files load strictly; our safetensors format round-trips and refuses crafted
files from their header; option files parse."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from safetensors.torch import save_file

from hidiff.checkpoint import FORMAT, CheckpointMismatch, read_official
from hidiff.config import HIDiffConfig, from_official_options, preset
from hidiff.model import HIDiff

# Key names and shapes as the official architecture code defines them (zhengchen1999/HI-Diff,
# hi_diff/archs/*.py with options/test/GoPro.yml): a sample across every kind of layer.
OFFICIAL_GOPRO_KEYS = {
    "net_g": {
        "down_1.1.weight": (4, 16), "down_1.3.weight": (256, 256), "down_2.1.weight": (1, 4),
        "patch_embed.proj.weight": (48, 3, 3, 3),
        "encoder_level1.him.norm1.body.weight": (48,), "encoder_level1.him.norm2.body.bias": (256,),
        "encoder_level1.him.q.weight": (48, 48), "encoder_level1.him.kv.weight": (96, 256),
        "encoder_level1.him.proj.bias": (48,),
        "encoder_level1.blocks.0.attn.temperature": (1, 1, 1),
        "encoder_level1.blocks.0.attn.qkv.weight": (144, 48, 1, 1),
        "encoder_level1.blocks.0.attn.qkv_dwconv.weight": (144, 1, 3, 3),
        "encoder_level1.blocks.2.ffn.project_in.weight": (254, 48, 1, 1),
        "encoder_level1.blocks.2.ffn.dwconv.weight": (254, 1, 3, 3),
        "encoder_level1.blocks.2.ffn.project_out.weight": (48, 127, 1, 1),
        "encoder_level2.him.kv.weight": (192, 256),
        "latent.blocks.5.attn.ln1.weight": (384, 256), "latent.blocks.0.ffn.ln2.bias": (384,),
        "down1_2.body.0.weight": (24, 48, 3, 3), "up4_3.body.0.weight": (768, 384, 3, 3),
        "reduce_chan_level3.weight": (192, 384, 1, 1), "decoder_level1.him.kv.weight": (192, 256),
        "refinement.blocks.3.norm2.body.bias": (96,), "output.weight": (3, 96, 3, 3),
    },
    "net_le_dm": {
        "conv1.0.weight": (64, 48, 3, 3), "blocks.5.2.weight": (64, 64, 3, 3), "conv2.weight": (64, 64, 3, 3),
        "mlp.patch_mixer.0.weight": (8, 16), "mlp.channel_mixer.0.weight": (256, 64),
        "mlp.norm1.weight": (64,), "end.0.weight": (256, 64),
    },
    "net_d": {
        "time_mlp": (1,), "first_layer.0.weight": (512, 768), "blocks.0.0.patch_mixer.0.weight": (8, 16),
        "blocks.1.0.channel_mixer.0.weight": (1024, 512), "final_layer.0.weight": (256, 512),
    },
}
OFFICIAL_REALBLUR_KEYS = {
    "net_le_dm": {"conv2.4.weight": (256, 128, 3, 3), "mlp.channel_mixer.0.weight": (1024, 256), "end.0.weight": (256, 256)},
    "net_d": {"resmlp.0.weight": (256, 513), "resmlp.2.resmlp.0.weight": (256, 256), "resmlp.5.resmlp.0.bias": (256,)},
    "net_g": {"encoder_level1.blocks.0.ffn.project_in.weight": (192, 48, 1, 1)},
}
PARTS = {"net_g": "restormer", "net_le_dm": "le_dm", "net_d": "denoiser"}


def state_dicts(model):
    return {name: getattr(model, part).state_dict() for name, part in PARTS.items()}


@pytest.mark.parametrize("config, expected", [(preset("gopro"), OFFICIAL_GOPRO_KEYS), (preset("realblur_j"), OFFICIAL_REALBLUR_KEYS)])
def test_parameter_names_and_shapes_are_the_official_ones(config, expected):
    with torch.device("meta"):
        model = HIDiff(config)
    states = state_dicts(model)
    for net, keys in expected.items():
        for key, shape in keys.items():
            assert key in states[net], f"{net}: official key {key} missing"
            assert tuple(states[net][key].shape) == shape, key


def write_official(tmp_path, model, wrap=True):
    paths = {}
    for name, state in state_dicts(model).items():
        paths[name] = tmp_path / f"{name}.pth"
        torch.save({"params": state} if wrap else state, paths[name])
    return paths


@pytest.mark.parametrize("wrap", [True, False])
def test_official_layout_loads_strictly_and_reproduces(tmp_path, tiny_model, wrap):
    paths = write_official(tmp_path, tiny_model, wrap)
    options = {"network_g": tiny_model.config.to_dict()["network_g"] | {"type": "Transformer"}}
    cfg = tiny_model.config.to_dict()
    options.update({
        "network_le_dm": {k: v for k, v in cfg["network_le_dm"].items() if k != "activation"} | {"type": "latent_encoder_gelu"},
        "network_d": {k: cfg["network_d"][k] for k in ("in_channel", "out_channel", "inner_channel", "block_num", "group",
                                                         "patch_expansion", "channel_expansion")} | {"type": "denoising"},
        "diffusion_schedule": {"schedule": "linear", "timesteps": 8, "linear_start": 0.1, "linear_end": 0.99, "apply_ldm": False},
    })
    loaded = HIDiff.from_official(paths["net_g"], paths["net_le_dm"], paths["net_d"], options=options)
    blur, noise = torch.rand(1, 3, 20, 28), torch.randn(1, 16, 32)
    with torch.no_grad():
        assert torch.equal(loaded(blur, noise), tiny_model(blur, noise))


def test_renamed_key_fails_naming_it(tmp_path, tiny_model):
    paths = write_official(tmp_path, tiny_model)
    state = tiny_model.restormer.state_dict()
    state["output.weights"] = state.pop("output.weight")
    torch.save({"params": state}, paths["net_g"])
    with pytest.raises(CheckpointMismatch) as info:
        HIDiff.from_official(paths["net_g"], paths["net_le_dm"], paths["net_d"], options=_tiny_options(tiny_model))
    message = str(info.value)
    assert "missing keys: output.weight" in message and "unexpected keys: output.weights" in message
    assert "net_g" in message


def test_reshaped_key_fails_naming_it(tmp_path, tiny_model):
    paths = write_official(tmp_path, tiny_model)
    state = tiny_model.denoiser.state_dict()
    state["final_layer.0.weight"] = torch.zeros(31, 32)
    torch.save({"params": state}, paths["net_d"])
    with pytest.raises(CheckpointMismatch, match=r"mis-shaped keys: final_layer\.0\.weight: checkpoint \(31, 32\) vs model \(32, 32\)"):
        HIDiff.from_official(paths["net_g"], paths["net_le_dm"], paths["net_d"], options=_tiny_options(tiny_model))


def _tiny_options(model):
    cfg = model.config.to_dict()
    return {
        "network_g": cfg["network_g"],
        "network_le_dm": {k: v for k, v in cfg["network_le_dm"].items() if k != "activation"},
        "network_d": {k: v for k, v in cfg["network_d"].items() if k not in ("kind", "n_feats", "n_denoise_res", "timesteps")},
    }


def test_non_checkpoint_file_is_refused(tmp_path):
    bad = tmp_path / "net_g.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_official(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_official(tmp_path / "missing.pth")


def test_safetensors_round_trip_with_embedded_config(tmp_path, tiny_model):
    path = tmp_path / "model.safetensors"
    tiny_model.save(path, note="test")
    assert not list(tmp_path.glob("*.tmp"))
    loaded = HIDiff.load(path)
    assert loaded.config == tiny_model.config
    blur, noise = torch.rand(1, 3, 16, 16), torch.randn(1, 16, 32)
    with torch.no_grad():
        assert torch.equal(loaded(blur, noise), tiny_model(blur, noise))
    tiny_model.save(tmp_path / "half.safetensors", dtype=torch.float16)
    assert (tmp_path / "half.safetensors").stat().st_size < path.stat().st_size * 0.6


def write_crafted(path, model, **network_g):
    """A safetensors file with ``model``'s tensors whose embedded configuration says ``network_g``."""
    config = model.config.to_dict()
    config["network_g"].update(network_g)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "config": json.dumps(config)})
    return path


def test_configuration_values_beyond_the_bounds_are_refused_by_name(tmp_path, tiny_model):
    path = write_crafted(tmp_path / "crafted.safetensors", tiny_model, dim=4096, num_blocks=[40, 40, 40, 40])
    with pytest.raises(ValueError, match=r"crafted.safetensors: the embedded configuration is refused: .*"
                                         r"network_g.dim 4096 is outside 1..512; network_g.num_blocks "
                                         r"\(40, 40, 40, 40\) is outside 0..32"):
        HIDiff.load(path)


# Loads the file given in argv[1] and prints how much the peak resident memory grew meanwhile.
_PEAK_SCRIPT = """
import resource, sys
from hidiff.checkpoint import CheckpointMismatch
from hidiff.model import HIDiff
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    HIDiff.load(sys.argv[1])
except CheckpointMismatch as exc:
    print("refused:", str(exc)[:200])
print("grew KiB:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_tensors_that_do_not_fit_the_configuration_are_refused_before_allocating(tmp_path, tiny_model):
    # Within the bounds, but the network it describes (dim 128, 4 blocks per level) would take
    # about 450 MiB, and the file holds the tiny model's tensors. The header check refuses it
    # first; a fresh process shows that its peak memory barely moved.
    path = write_crafted(tmp_path / "crafted.safetensors", tiny_model, dim=128, num_blocks=[4, 4, 4, 4])
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"refused: {path} does not fit the network configuration; missing keys: restormer.")
    assert int(lines[1].removeprefix("grew KiB:")) < 100 * 1024


@pytest.mark.parametrize("name", ["net_g.pth", "net_g.safetensors"])
def test_a_pytorch_checkpoint_points_to_from_official(tmp_path, tiny_model, name):
    path = tmp_path / name
    torch.save({"params": tiny_model.restormer.state_dict()}, path)
    with pytest.raises(ValueError, match=r"is a PyTorch checkpoint \(torch.save\), not a weights file written by "
                                         r"HIDiff.save. For the official release files use HIDiff.from_official\("):
        HIDiff.load(path)


def test_a_damaged_header_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes((64).to_bytes(8, "little") + b"{not json")
    with pytest.raises(ValueError, match="is not a readable safetensors file") as info:
        HIDiff.load(path)
    assert "from_official" not in str(info.value)
    path = path.rename(tmp_path / "model.pth")  # not torch.save's bytes, but named like a checkpoint
    with pytest.raises(ValueError, match=r"is not a readable safetensors file: .*use HIDiff.from_official\("):
        HIDiff.load(path)


OFFICIAL_GOPRO_TEST_OPTIONS = """
name: test_HI_Diff_GoPro
model_type: HI_Diff_S2
scale: 1
num_gpu: 1
manual_seed: 100
network_g:
  type: Transformer
  inp_channels: 3
  out_channels: 3
  dim: 48
  num_blocks: [3,5,6,6]
  num_refinement_blocks: 4
  heads: [1,2,4,8]
  ffn_expansion_factor: 2.66
  bias: False
  LayerNorm_type: WithBias
  dual_pixel_task: False
  embed_dim: 64
  group: 4
network_le:
  type: latent_encoder_gelu
  in_chans: 6
  embed_dim: 64
  block_num: 6
  group: 4
  stage: 1
  patch_expansion: 0.5
  channel_expansion: 4
network_le_dm:
  type: latent_encoder_gelu
  in_chans: 3
  embed_dim: 64
  block_num: 6
  group: 4
  stage: 2
  patch_expansion: 0.5
  channel_expansion: 4
network_d:
  type: denoising
  in_channel: 256
  out_channel: 256
  inner_channel: 512
  block_num: 4
  group: 4
  patch_expansion: 0.5
  channel_expansion: 2
diffusion_schedule:
  apply_ldm: False
  schedule: linear
  timesteps: 8
  linear_start: 0.1
  linear_end: 0.99
path:
  pretrain_network_g: experiments/pretrained_models/HI_Diff_GoPro/net_g.pth
"""


def test_official_gopro_option_file_equals_the_preset(tmp_path):
    path = tmp_path / "GoPro.yml"
    path.write_text(OFFICIAL_GOPRO_TEST_OPTIONS)
    assert from_official_options(path) == preset("gopro") == HIDiffConfig()
    assert from_official_options(yaml.safe_load(OFFICIAL_GOPRO_TEST_OPTIONS)) == preset("gopro")


def test_option_file_with_unknown_key_is_refused():
    options = yaml.safe_load(OFFICIAL_GOPRO_TEST_OPTIONS)
    options["network_g"]["window_size"] = 8
    with pytest.raises(ValueError, match=r"network_g: unknown keys \['window_size'\]"):
        from_official_options(options)


def test_realblur_presets_follow_their_option_files():
    cfg = preset("realblur_r")
    assert cfg.network_g.ffn_expansion_factor == 2.0
    assert cfg.network_le_dm.activation == "lrelu" and cfg.network_le_dm.block_num == 5
    assert cfg.network_d.kind == "simple_denoise" and cfg.diffusion_schedule.timesteps == 16
    assert cfg.diffusion_schedule.apply_ldm


def test_every_size_of_an_option_file_is_honoured():
    options = yaml.safe_load(OFFICIAL_GOPRO_TEST_OPTIONS)
    options["network_g"].update(dim=16, num_blocks=[1, 2, 2, 3], heads=[1, 1, 2, 2], bias=True, LayerNorm_type="BiasFree",
                                embed_dim=8, num_refinement_blocks=1, ffn_expansion_factor=2)
    options["network_le_dm"].update(embed_dim=8, block_num=2, patch_expansion=1, channel_expansion=2)
    options["network_d"].update(in_channel=32, out_channel=32, inner_channel=64, block_num=3)
    options["diffusion_schedule"].update(timesteps=4, linear_start=0.2, linear_end=0.5)
    cfg = from_official_options(options)
    model = HIDiff(cfg)
    assert len(model.restormer.latent.blocks) == 3 and model.restormer.encoder_level1.blocks[0].attn.qkv.bias is not None
    assert model.restormer.encoder_level1.blocks[0].norm1.body.bias is None
    assert model.le_dm.mlp.patch_mixer[0].out_features == 16 and len(model.le_dm.blocks) == 2
    assert model.denoiser.first_layer[0].in_features == 96 and len(model.denoiser.blocks) == 1
    assert model.schedule.num_timesteps == 4 and abs(float(model.schedule.betas[0]) - 0.2) < 1e-7
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 24)).shape == (1, 3, 16, 24)


def test_tiny_fixture_config_is_valid():
    assert tiny_config().prior_channels == 32
