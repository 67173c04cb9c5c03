"""The evaluation transform's last step as a table lookup: bit-identical to timm's, for every 8-bit input."""

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.transforms import MaybeToTensor
from torchvision.transforms import Compose, Normalize, ToTensor

from pipeline.model.build import Preprocessing
from pipeline.model.to_tensor import NormalisedTensor, without_torch_threads

NORMS = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "grey": ((0.449,), (0.226,)),
}


def _images():
    rng = np.random.default_rng(0)
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    yield Image.fromarray(np.stack([every_value, every_value[::-1], every_value.T], axis=-1))
    yield Image.fromarray(every_value)
    for shape in [(37, 53, 3), (80, 41, 3), (64, 64)]:
        yield Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def _outcome(transform, image):
    try:
        return transform(image)
    except Exception as exc:  # noqa: BLE001 - the same failure is part of being the same transform
        return type(exc)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_the_lookup_gives_timms_tensor_bit_for_bit(norm, crop_mode):
    mean, std = NORMS[norm]
    settings = dict(input_size=(3, 24, 24), interpolation="bicubic", mean=mean, std=std, crop_pct=0.875,
                    crop_mode=crop_mode)
    fast = Preprocessing(**settings).transform()
    timms = create_transform(**settings, is_training=False)
    assert isinstance(fast.transforms[-1], NormalisedTensor)
    looked_up = Compose([*fast.transforms[:-1], fast.transforms[-1].lookup])  # what a decoding thread gets
    for image in _images():
        theirs = _outcome(timms, image)
        for ours in (_outcome(fast, image), _outcome(looked_up, image)):
            if isinstance(theirs, torch.Tensor):
                assert isinstance(ours, torch.Tensor) and ours.dtype == theirs.dtype
                assert torch.equal(ours, theirs), (norm, crop_mode, image.mode, image.size)
            else:  # e.g. a grey image against three means: the same error either way
                assert ours is theirs


def test_the_main_thread_keeps_torchs_steps_and_a_decoding_thread_looks_up():
    import threading

    step = NormalisedTensor(MaybeToTensor(), Normalize(*NORMS["imagenet"]))
    image = next(_images())
    here = step(image)
    there = []
    worker = threading.Thread(target=lambda: there.append(step(image)))
    worker.start()
    worker.join()
    assert torch.equal(here, there[0])
    assert here.is_contiguous()  # torch's ToTensor: channels first
    assert there[0].permute(1, 2, 0).is_contiguous()  # the lookup: stored channels last


def test_every_table_entry_is_what_torch_computes_per_pixel():
    normalize = Normalize(*NORMS["imagenet"])
    step = NormalisedTensor(ToTensor(), normalize)
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 256).expand(3, 1, 256)
    expected = normalize(values.to(torch.float32).div(255)).reshape(3, 256).numpy()
    assert np.array_equal(step.table, expected)


def test_inputs_that_are_not_8_bit_take_torchs_own_steps():
    step = NormalisedTensor(MaybeToTensor(), Normalize((0.5,), (0.25,))).lookup
    floats = Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), mode="F")
    sixteen = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 4000)
    tensor = torch.rand(1, 3, 4)
    assert torch.equal(step(floats), Normalize((0.5,), (0.25,))(MaybeToTensor()(floats)))
    assert torch.equal(step(tensor), Normalize((0.5,), (0.25,))(tensor))
    assert _outcome(step, sixteen) is TypeError  # torchvision's own complaint about a 16-bit image, unchanged


def test_other_shapes_of_transform_are_left_alone():
    no_normalise = Compose([ToTensor()])
    in_place = Compose([ToTensor(), Normalize((0.5,), (0.5,), inplace=True)])
    assert without_torch_threads(no_normalise) is no_normalise
    assert without_torch_threads(in_place) is in_place
    assert without_torch_threads(lambda image: image).__class__.__name__ == "function"
