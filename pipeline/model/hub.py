"""Pretrained weights from the model hubs: a local cache first, the network only when it can answer.

timm resolves a model's weights from its ``pretrained_cfg``: a Hugging Face
repository (``hf_hub_id``, file ``model.safetensors`` or ``pytorch_model.bin``)
or a URL cached under torch hub's ``checkpoints`` folder; torchvision from its
weights enum's URL, cached in the same folder. Both caches are searched here
without any network access. Only when nothing is cached, the network is allowed
(``HF_HUB_OFFLINE`` unset) and the host answers a short connection attempt is a
download tried, with the hub's retry logging silenced; otherwise the caller
gets one line that says how to proceed, within seconds instead of a minute of
retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ModelError

CONNECT_TIMEOUT_S = 3.0
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
QUIET_LOGGERS = ("huggingface_hub", "urllib3", "httpx", "httpcore", "requests", "filelock", "timm")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubWeights:
    """Where a model's pretrained weights live: a cached file, or a place to download from."""

    cached: Path | None  # a file in a local hub cache
    looked_in: tuple[str, ...]  # what was searched, for the error message
    host: str | None  # the host a download would contact (None: no pretrained weights exist)


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: never touch the network."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def torch_checkpoints_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where timm and torchvision cache URLs."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def timm_weights(name: str) -> HubWeights:
    """The cached pretrained file of timm model ``name``, or where it would come from."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return HubWeights(None, (), None)
    looked: list[str] = []
    if cfg.file and Path(cfg.file).is_file():
        return HubWeights(Path(cfg.file), (str(cfg.file),), None)
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        found = _hf_cached(repo, revision or None, _hf_files(cfg.hf_hub_filename))
        looked.append(f"{hf_cache_dir()} (repository {repo})")
        if found is not None:
            return HubWeights(found, tuple(looked), None)
    if cfg.url:
        cached = torch_checkpoints_dir() / os.path.basename(urlparse(cfg.url).path)
        looked.append(str(cached))
        if cached.is_file():
            return HubWeights(cached, tuple(looked), None)
    host = urlparse(hf_endpoint()).hostname if cfg.hf_hub_id else (urlparse(cfg.url).hostname if cfg.url else None)
    return HubWeights(None, tuple(looked), host)


def torchvision_weights(name: str) -> HubWeights:
    """The cached default weights file of torchvision model ``name``, or where it would come from."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return HubWeights(None, (), None)
    cached = torch_checkpoints_dir() / os.path.basename(urlparse(weights.url).path)
    if cached.is_file():
        return HubWeights(cached, (str(cached),), None)
    return HubWeights(None, (str(cached),), urlparse(weights.url).hostname)


def _hf_files(override: str | None) -> tuple[str, ...]:
    if not override:
        return HF_WEIGHT_FILES
    if override.endswith(".safetensors"):
        return (override,)
    stem = override.rsplit(".", 1)[0]
    safe = "model.safetensors" if override == "pytorch_model.bin" else f"{stem}.safetensors"
    return (safe, override)


def _hf_cached(repo: str, revision: str | None, files: tuple[str, ...]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in files:
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=revision)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def reachable(host: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether ``host`` accepts a TCP connection on port 443 within ``timeout`` seconds.

    Behind an HTTPS proxy a direct connection says nothing, so the answer is yes
    and the download itself decides.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    answer: list[bool] = []

    def connect():
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    # the name lookup is not bound by the socket's timeout (a broken resolver can take much longer), the thread is
    checker = threading.Thread(target=connect, daemon=True)
    checker.start()
    checker.join(timeout)
    return bool(answer and answer[0])


@contextlib.contextmanager
def quiet_hub():
    """Silence the hubs' retry logging and warnings while a download is tried (the caller reports failure)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_download_possible(model: str, found: HubWeights) -> None:
    """Raise the one-line error unless a download of ``model``'s weights can be tried now."""
    fix = ("pass weights=FILE (--weights FILE; timm, torchvision or safetensors format), copy a hub cache that "
           f"holds them here (HF_HOME={hf_cache_dir().parent}, TORCH_HOME={torch_checkpoints_dir().parent.parent}), "
           "or use random_init=True (--random-init) for an untrained model")
    if found.host is None:
        raise ModelError(f"{model} has no pretrained weights to download; {fix}")
    where = f"; looked in {', '.join(found.looked_in)}" if found.looked_in else ""
    if offline():
        raise ModelError(f"the weights of {model} are not on this machine and HF_HUB_OFFLINE is set{where}; {fix}")
    if not reachable(found.host):
        raise ModelError(f"the weights of {model} are not on this machine and {found.host} cannot be reached{where}; "
                         f"{fix} (HF_HUB_OFFLINE=1 skips the network check)")
