"""The last step of the evaluation transform, 8-bit image -> normalised float tensor; in a decoding thread
without torch's thread pool.

timm's transform ends with ``ToTensor`` (divide by 255) and ``Normalize`` (subtract
the mean, divide by the standard deviation): three passes of torch element-wise
operations over a 150,000-value image. torch runs each on its intra-op thread
pool, which is the pool the forward pass uses: a decoding thread that calls
them competes with the forward pass for the same threads.

In the main thread (decoding in line, between forward passes, on a process
with one core) the torch steps are kept: torch's pool is idle then. In any
other thread (the decode-ahead thread beside the forward pass, or the threads a
batch decoded in line is spread over, which would otherwise each call into
that one pool) the steps are replaced:

An 8-bit image has only 256 values per channel, so the result is a lookup:
``table[c, v] = (v / 255 - mean[c]) / std[c]``, each value computed by the very
float32 operations ``ToTensor`` and ``Normalize`` perform, then gathered per
pixel by numpy in the calling thread. The values are bit-identical to timm's
(tested on generated images in every 8-bit mode and several normalisations and
crops; checked once on 600 bundled Br35H images); any input that is not an
8-bit PIL image goes through the original steps.

The tensor is stored channels last (H x W x C in memory, seen as C x H x W),
the layout the forward pass runs in: batches of such images are stacked
straight into a channels-last batch (:func:`pipeline.activations.feed.collate`)
instead of being stacked channels first and transposed again.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

EIGHT_BIT_MODES = {"RGB": 3, "L": 1}  # what the decoders hand over (colour policy); others take the slow path


class NormalisedTensor:
    """``ToTensor`` then ``Normalize(mean, std)``: torch's own steps in the main thread, one table lookup
    for 8-bit RGB and L images in any other."""

    def __init__(self, to_tensor, normalize):
        self.to_tensor, self.normalize = to_tensor, normalize
        mean = torch.as_tensor(normalize.mean, dtype=torch.float32).reshape(-1, 1)
        std = torch.as_tensor(normalize.std, dtype=torch.float32).reshape(-1, 1)
        values = torch.arange(256, dtype=torch.uint8).reshape(1, -1).expand(len(mean), 256)
        # The same operations in the same order as torchvision: to float, div 255, sub mean, div std.
        self.table = values.to(torch.float32).div(255).sub(mean).div(std).numpy()
        self.offsets = np.arange(0, 256 * 3, 256, dtype=np.uint16)

    def __call__(self, image) -> torch.Tensor:
        if threading.current_thread() is threading.main_thread():
            # Between forward passes torch's pool is idle: its parallel steps are the faster (0.51 against
            # 0.64 ms an image with stacking, bench/extract_parts.py on 2 quiet cores). A decoding thread looks up.
            return self.normalize(self.to_tensor(image))
        return self.lookup(image)

    def lookup(self, image) -> torch.Tensor:
        """The normalised tensor by table lookup, in this thread alone (stored channels last)."""
        channels = EIGHT_BIT_MODES.get(getattr(image, "mode", None))
        if channels is None or (len(self.table) != channels and len(self.table) != 1):
            return self.normalize(self.to_tensor(image))
        pixels = np.asarray(image, dtype=np.uint8).reshape(image.size[1], image.size[0], channels)
        table = self.table if len(self.table) == channels else np.repeat(self.table, channels, axis=0)
        where = pixels + self.offsets[:channels]  # uint16: channel c's values at c * 256 of the flat table
        hwc = np.take(table.ravel(), where)
        return torch.from_numpy(hwc).permute(2, 0, 1)  # C x H x W, stored channels last

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_tensor!r}, {self.normalize!r})"


def without_torch_threads(compose):
    """``compose`` (a torchvision ``Compose``) with a trailing ToTensor + Normalize replaced by
    :class:`NormalisedTensor`; any other shape of transform is returned unchanged."""
    from torchvision.transforms import Normalize, ToTensor

    steps = list(getattr(compose, "transforms", ()))
    if len(steps) < 2 or not isinstance(steps[-2], ToTensor) or type(steps[-1]) is not Normalize:
        return compose
    if getattr(steps[-1], "inplace", False) is not False:
        return compose
    return type(compose)([*steps[:-2], NormalisedTensor(steps[-2], steps[-1])])
