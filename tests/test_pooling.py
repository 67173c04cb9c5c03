import pytest
import torch

from pipeline.activations import POOLINGS, get_pooling, register_pooling
from pipeline.activations.pooling import accepted_poolings, check_poolings
from pipeline.errors import PipelineError
from pipeline.model import LayerSpec
from pipeline.model.layout import NC, NCHW, NHWC, NLC, Layout

CHW = Layout(NCHW, (2, 2))


@pytest.fixture
def fmap():
    # one image, two channels, 2x2 map
    return torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[-4.0, 0.0], [2.0, 2.0]]]])


def test_avg_max_avgmax_against_hand_computed(fmap):
    assert get_pooling("avg")(fmap, CHW).tolist() == [[3.0, 0.0]]
    assert get_pooling("max")(fmap, CHW).tolist() == [[6.0, 2.0]]
    assert get_pooling("avgmax")(fmap, CHW).tolist() == [[4.5, 1.0]]


def test_gem_is_cube_root_of_mean_cube(fmap):
    got = get_pooling("gem")(fmap, CHW)
    first = ((1 + 8 + 27 + 216) / 4) ** (1 / 3)
    second = ((1e-18 + 1e-18 + 8 + 8) / 4) ** (1 / 3)  # negatives and zeros clamp to 1e-6
    assert got[0, 0].item() == pytest.approx(first, rel=1e-6)
    assert got[0, 1].item() == pytest.approx(second, rel=1e-5)


@pytest.mark.parametrize("name", ["avg", "max", "avgmax", "gem"])
def test_channels_last_maps_pool_over_h_and_w(fmap, name):
    """The same map stored NHWC pools to the same codes: the layout, not the shape, says where channels are."""
    nhwc = fmap.permute(0, 2, 3, 1).contiguous()  # (1, 2, 2, 2): shape alone cannot tell the axes apart
    assert get_pooling(name)(nhwc, Layout(NHWC, (2, 2))).tolist() == get_pooling(name)(fmap, CHW).tolist()


def test_tokens_pool_over_patch_tokens_only():
    tokens = torch.arange(15, dtype=torch.float32).reshape(1, 5, 3)  # class token, then a 2x2 grid
    layout = Layout(NLC, (2, 2), prefix_tokens=1, class_token=True)
    assert get_pooling("avg")(tokens, layout).tolist() == [[7.5, 8.5, 9.5]]  # rows 1..4: (3+6+9+12)/4
    assert get_pooling("max")(tokens, layout).tolist() == [[12.0, 13.0, 14.0]]
    assert get_pooling("token")(tokens, layout).tolist() == [[0.0, 1.0, 2.0]]


def test_distillation_and_register_tokens_are_left_out():
    tokens = torch.zeros(1, 6, 2)
    tokens[:, :2] = 100.0  # class and distillation token
    tokens[:, 2:] = torch.tensor([1.0, 2.0, 3.0, 6.0])[:, None]
    layout = Layout(NLC, (2, 2), prefix_tokens=2, class_token=True)
    assert get_pooling("avg")(tokens, layout).tolist() == [[3.0, 3.0]]
    assert get_pooling("token")(tokens, layout).tolist() == [[100.0, 100.0]]


def test_token_pooling_needs_a_class_token(fmap):
    assert accepted_poolings(Layout(NLC, (2, 2), 1, False)) == ["avg", "max", "avgmax", "gem"]
    assert accepted_poolings(Layout(NLC, (2, 2), 1, True)) == ["avg", "max", "avgmax", "gem", "token"]
    assert accepted_poolings(CHW) == ["avg", "max", "avgmax", "gem"]
    assert accepted_poolings(Layout(NC)) == ["none"]
    with pytest.raises(PipelineError, match=r"pooling 'token' does not apply to a NCHW 2x2 output"):
        get_pooling("token")(fmap, CHW)
    spec = LayerSpec("layers.0", "stage", 0, 2, 4, 0, Layout(NHWC, (2, 2)))
    with pytest.raises(PipelineError, match=r"^pooling 'token' does not apply to layer 'layers.0' \(NHWC 2x2\); "
                                            r"it accepts avg, max, avgmax, gem \("):
        check_poolings([spec], ("avg", "token"))


def test_half_inputs_give_float32(fmap):
    out = get_pooling("avg")(fmap.half().contiguous(memory_format=torch.channels_last), CHW)
    assert out.dtype == torch.float32
    assert out.tolist() == [[3.0, 0.0]]


def test_unknown_pooling_lists_the_valid_ones():
    with pytest.raises(PipelineError, match=r"unknown pooling 'median'; available: avg, avgmax, gem, max, token"):
        get_pooling("median")


def test_registry_accepts_new_poolings():
    def center(x, layout):
        return x[..., x.shape[-2] // 2, x.shape[-1] // 2].float()

    register_pooling("center", center, accepts=lambda layout: layout.format == NCHW)
    try:
        assert get_pooling("center")(torch.ones(2, 3, 5, 5), Layout(NCHW, (5, 5))).shape == (2, 3)
        assert "center" not in accepted_poolings(Layout(NHWC, (5, 5)))
    finally:
        POOLINGS.pop("center")
    with pytest.raises(PipelineError, match="invalid pooling name"):
        register_pooling("none", center)
