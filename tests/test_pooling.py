import pytest
import torch

from pipeline.activations import POOLINGS, get_pooling, register_pooling
from pipeline.errors import PipelineError


@pytest.fixture
def fmap():
    # one image, two channels, 2x2 map
    return torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[-4.0, 0.0], [2.0, 2.0]]]])


def test_avg_max_avgmax_against_hand_computed(fmap):
    assert get_pooling("avg")(fmap).tolist() == [[3.0, 0.0]]
    assert get_pooling("max")(fmap).tolist() == [[6.0, 2.0]]
    assert get_pooling("avgmax")(fmap).tolist() == [[4.5, 1.0]]


def test_gem_is_cube_root_of_mean_cube(fmap):
    got = get_pooling("gem")(fmap)
    first = ((1 + 8 + 27 + 216) / 4) ** (1 / 3)
    second = ((1e-18 + 1e-18 + 8 + 8) / 4) ** (1 / 3)  # negatives and zeros clamp to 1e-6
    assert got[0, 0].item() == pytest.approx(first, rel=1e-6)
    assert got[0, 1].item() == pytest.approx(second, rel=1e-5)


def test_tokens_pool_over_the_sequence():
    tokens = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)  # (N, L, C)
    assert get_pooling("avg")(tokens).tolist() == [[4.0, 5.0, 6.0, 7.0]]
    assert get_pooling("max")(tokens).tolist() == [[8.0, 9.0, 10.0, 11.0]]


def test_channels_last_and_half_inputs_give_float32(fmap):
    out = get_pooling("avg")(fmap.half().contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.float32
    assert out.tolist() == [[3.0, 0.0]]


def test_unknown_pooling_lists_the_valid_ones():
    with pytest.raises(PipelineError, match=r"unknown pooling 'median'; available: avg, avgmax, gem, max"):
        get_pooling("median")


def test_registry_accepts_new_poolings():
    register_pooling("center", lambda x: x[..., x.shape[-2] // 2, x.shape[-1] // 2].float())
    try:
        assert get_pooling("center")(torch.ones(2, 3, 5, 5)).shape == (2, 3)
    finally:
        POOLINGS.pop("center")
    with pytest.raises(PipelineError, match="invalid pooling name"):
        register_pooling("none", lambda x: x)
