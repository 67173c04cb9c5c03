"""Offline is a first-class path: layers needs no weights, missing weights fail fast, a hub cache is used."""

import socket
import time

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import ModelError
from pipeline.model import build_model
from pipeline.model import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Empty hub caches under tmp_path, HF_HUB_OFFLINE unset, and every connection refused (and counted)."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network is unreachable (test)")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HTTPS_PROXY", "https_proxy",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def _random_state(model: torch.nn.Module, seed: int) -> dict:
    """Weights unlike the seeded random init, so a test sees which ones were loaded."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in model.state_dict().items()}


def _assert_loaded(module: torch.nn.Module, state: dict):
    for name, tensor in module.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(tensor, state[name]), name


def test_layers_lists_the_architecture_without_weights_or_network(no_network, monkeypatch):
    import huggingface_hub

    def forbidden(*args, **kwargs):
        raise AssertionError("layers must not touch the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    result = CliRunner().invoke(main, ["layers", "resnet18", "--img-size", "64"])
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines()[1:6]] == ["act1", "layer1", "layer2", "layer3",
                                                                            "layer4"]
    result = CliRunner().invoke(main, ["layers", "torchvision/mobilenet_v2", "--img-size", "64"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:2] == ["0", "features.1"]
    assert no_network == []  # not even a connection attempt


@pytest.mark.parametrize("model", ["resnet18", "torchvision/resnet18"])
def test_missing_weights_fail_in_seconds_with_one_line(no_network, model):
    started = time.perf_counter()
    with pytest.raises(ModelError) as caught:
        build_model(model, img_size=64)
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "\n" not in message and "cannot be reached" in message
    assert "--weights FILE" in message and "HF_HOME=" in message and "HF_HUB_OFFLINE=1" in message
    assert len(no_network) == 1  # one quick check, no retries
    host = no_network[0][0]
    assert host == ("huggingface.co" if model == "resnet18" else "download.pytorch.org")


def test_hf_hub_offline_skips_even_the_check(no_network, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (16, 16)).save(folder / label / "x.png")
    result = CliRunner().invoke(main, ["extract", "--model", "resnet18", "--images", str(folder),
                                       "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the weights of resnet18 are not on this machine and HF_HUB_OFFLINE is set")
    assert len(result.output.splitlines()) == 1 and no_network == []
    assert not (tmp_path / "c.h5").exists()


def _fill_hf_cache(root, repo: str, filename: str, state: dict):
    from safetensors.torch import save_file

    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    path = folder / "snapshots" / COMMIT / filename
    if filename.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_a_prefilled_hf_cache_is_used_without_network(no_network, tmp_path, filename):
    import timm

    state = _random_state(timm.create_model("resnet18"), seed=1)
    path = _fill_hf_cache(tmp_path / "hf", timm.models.get_pretrained_cfg("resnet18").hf_hub_id, filename, state)
    loaded = build_model("resnet18", img_size=64)
    assert loaded.weights.source == "hub" and loaded.weights.path == str(path)
    assert loaded.weights.sha256 == hub_file_digest(path)
    _assert_loaded(loaded.module, state)
    assert no_network == []


def test_a_prefilled_torch_hub_cache_is_used_for_torchvision(no_network, tmp_path):
    import torchvision

    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    state = _random_state(torchvision.models.resnet18(), seed=2)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / url.rsplit("/", 1)[-1])
    loaded = build_model("torchvision/resnet18", img_size=64)
    assert loaded.weights.source == "hub" and loaded.weights.path == str(folder / url.rsplit("/", 1)[-1])
    _assert_loaded(loaded.module, state)
    assert no_network == []


def test_a_cached_timm_url_checkpoint_is_found(no_network, tmp_path):
    import timm

    cfg = timm.models.get_pretrained_cfg("resnet18")
    found = hub.timm_weights("resnet18")
    assert found.cached is None and found.host == "huggingface.co"
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / cfg.url.rsplit("/", 1)[-1]).write_bytes(b"x")
    assert hub.timm_weights("resnet18").cached == folder / cfg.url.rsplit("/", 1)[-1]


def test_a_damaged_cached_file_is_one_clear_error(no_network, tmp_path):
    import timm

    path = _fill_hf_cache(tmp_path / "hf", timm.models.get_pretrained_cfg("resnet18").hf_hub_id, "model.safetensors",
                          {"x": torch.zeros(1)})
    with pytest.raises(ModelError, match=f"the cached weights '{path}' of 'resnet18' cannot be loaded"):
        build_model("resnet18", img_size=64)


def hub_file_digest(path) -> str:
    from pipeline.model.weights import file_sha256

    return file_sha256(path)


def test_a_hanging_name_lookup_is_cut_short(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("name lookup timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    started = time.perf_counter()
    assert hub.reachable("huggingface.co", timeout=0.5) is False
    assert time.perf_counter() - started < 2
