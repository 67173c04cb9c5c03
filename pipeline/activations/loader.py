"""The images of a run as a dataset of preprocessed rows (fed by :mod:`.feed`), and the device."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..inputs import UndecodableImage
from ..inputs.decode import PIL_DECODER
from ..inputs.fingerprint import fingerprint


class ImageFiles(Dataset):
    """Row ``i`` -> (i, preprocessed image tensor, fingerprint), decoding frame ``frames[i]`` of ``paths[i]``
    with ``decoder``."""

    def __init__(self, paths: list[Path], transform, first_row: int = 0, decoder=PIL_DECODER,
                 frames: list[int | None] | None = None):
        self.paths = list(paths)
        self.frames = list(frames) if frames is not None else [None] * len(self.paths)
        self.transform = transform
        self.first_row = first_row
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            image, _ = self.decoder.decode(Path(path), self.frames[i])
        except UndecodableImage as exc:
            # It decoded during the check before extraction: the file changed since.
            raise InputError(f"{path} can no longer be decoded ({exc}); it changed during extraction") from None
        return self.first_row + i, self.transform(image), fingerprint(image)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda:") and name[5:].isdigit():
        return _cuda_index(int(name[5:]))
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device='cuda' (--device cuda) was asked for but no CUDA GPU is visible; use device='cpu' "
                         "or 'auto'")
    if name not in ("cpu", "cuda"):
        raise InputError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:<index>")
    return torch.device(name)


def _cuda_index(index: int) -> torch.device:
    """One GPU of several (one per torchrun rank), made the current device so nothing lands on GPU 0."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(f"device='cuda:{index}' (--device cuda:{index}) was asked for but no CUDA GPU is visible; "
                         "use device='cpu' or 'auto'")
    if index >= count:
        raise InputError(f"GPU cuda:{index} was asked for, but {count} GPU(s) are visible (0 to {count - 1}); "
                         "start no more ranks per node than it has GPUs")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
