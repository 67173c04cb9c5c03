"""BatchNorm folded into the convolution before it, for the forward passes of one extraction.

In inference a BatchNorm layer is a per-channel affine map, ``y = x * s + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``. When
its input comes straight from a convolution and from nothing else, scaling that
convolution's weights by ``s`` and giving it the bias ``t`` (plus its own bias
times ``s``) computes the same numbers in one pass instead of two: on the bundled
EfficientNet-Lite0 on 2 CPU cores the forward pass runs 1.27x faster folded
(``bench/forward_bn.py``; 1.04-1.43x on 28 architectures, ``bench/fold_panel.py``).
Inference engines (TensorRT, ONNX Runtime, OpenVINO, ``torch.jit.freeze``) do the
same. The codes change only in their last bits, as
they do between batch sizes, thread counts or machines; so it is recorded in the
manifest (``runtime.extra["batchnorm_folding"]``), not part of the cache key.

What is folded is found from the model's own computation, not from module
names or registration order: one forward pass of a random image with autograd on
records which tensor each BatchNorm reads; a pair is folded only when that
tensor is the output of a convolution that nothing else reads, and that no
requested layer outputs (its hook would see the normalised numbers instead).
Only exact types whose forward is known are touched (``nn.Conv2d`` and timm's
``Conv2dSame``; ``nn.BatchNorm2d`` and timm's ``BatchNormAct2d``): a subclass may
compute something else (a weight-standardised convolution, a frozen BatchNorm),
so it is left as it is. After
folding, the same image goes through again; unless every requested layer and
the model's output agree with the unfolded numbers to :data:`TOLERANCE` (of
each output's largest magnitude), everything is put back and the run computes
unfolded. Leaving the context always puts the model back as it was.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)

#: The largest difference from the unfolded model, relative to each checked output's largest magnitude,
#: that the check after folding accepts (measured: 3.6e-6 on the bundled Lite0, up to 7.9e-5 on random-init
#: models with random BatchNorm statistics, bench/fold_panel.py).
TOLERANCE = 1e-4
_SEED = 20240917  # of the random image the pairs are found and checked with


class ActOnly(nn.Module):
    """Where a folded timm ``BatchNormAct2d`` was: its dropout and activation, in that order."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.drop, self.act = norm.drop, norm.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _foldable_types() -> tuple[tuple[type, ...], dict]:
    """Convolution types whose forward reads ``weight`` and ``bias`` as given, and BatchNorm types with what
    makes the module that stands in for one once folded (timm's only where timm is installed)."""
    convs, norms = [nn.Conv2d], {nn.BatchNorm2d: lambda norm: nn.Identity()}
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame
    except ImportError:  # a torchvision-only install
        pass
    else:
        convs.append(Conv2dSame)
        norms[BatchNormAct2d] = ActOnly
    return tuple(convs), norms


@dataclass(frozen=True)
class Folding:
    """What was folded in one extraction, for the manifest."""

    pairs: tuple[tuple[str, str], ...] = ()  # (convolution, BatchNorm) module names
    batchnorms: int = 0  # BatchNorm layers of the model
    difference: float | None = None  # the check's largest relative difference from the unfolded model
    why_not: str | None = None  # why nothing (or less than every BatchNorm) was folded

    def as_dict(self) -> dict:
        found = {"folded": len(self.pairs), "batchnorms": self.batchnorms}
        if self.difference is not None:
            found["max_relative_difference"] = float(f"{self.difference:.3g}")
        if self.why_not:
            found["why_not"] = self.why_not
        return found


@contextmanager
def folded_batchnorm(model: nn.Module, example_shape: tuple[int, ...], observed: list[str],
                     why_not: str | None = None):
    """Fold what can be folded in ``model`` (in eval mode, on its device) while the context lasts; yield the
    :class:`Folding`. ``observed`` names the modules whose outputs the run reads (hooks); ``example_shape`` is
    one image's ``(C, H, W)``. With ``why_not`` (the reason this run must not fold) nothing is touched."""
    convs, norms = _foldable_types()
    count = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if why_not is not None or not count:
        yield Folding(batchnorms=count, why_not=why_not if count else None)
        return
    if torch.is_inference_mode_enabled():  # autograd records nothing there, so no pair could be shown safe
        yield Folding(batchnorms=count, why_not="called under torch.inference_mode()")
        return
    x = _example(model, example_shape)
    try:
        pairs, reference = find_pairs(model, x, observed, convs, tuple(norms))
    except RuntimeError as exc:  # e.g. an in-place operation autograd refuses: compute unfolded
        log.info("BatchNorm not folded: the forward pass could not be followed with autograd (%s)", exc)
        yield Folding(batchnorms=count, why_not="the forward pass could not be followed with autograd")
        return
    undo = _fold(model, pairs, norms)
    try:
        folding = _checked(model, x, observed, reference, pairs, count)
        if not folding.pairs:  # none found, or the check failed: the run computes unfolded
            undo()
        yield folding
    finally:
        undo()  # a second call finds nothing left to put back


def find_pairs(model: nn.Module, x: torch.Tensor, observed: list[str], convs: tuple[type, ...],
               norms: tuple[type, ...]) -> tuple[list[tuple[str, str]], dict[str, torch.Tensor]]:
    """The (convolution, BatchNorm) pairs of ``model`` that can be folded, found in one forward pass of ``x``
    with autograd on, and the outputs of ``observed`` modules and of the model in that pass."""
    modules = dict(model.named_modules())
    conv_out: dict[str, list] = {}
    norm_in: dict[str, list] = {}

    def on_conv(name, output):
        conv_out.setdefault(name, []).append(output.grad_fn)

    def on_norm(name, inputs):
        norm_in.setdefault(name, []).append(inputs[0].grad_fn if inputs and torch.is_tensor(inputs[0]) else None)

    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: on_conv(n, out))
             for n, m in modules.items() if type(m) in convs]
    hooks += [m.register_forward_pre_hook(lambda _m, inputs, n=n: on_norm(n, inputs))
              for n, m in modules.items() if type(m) in norms and _uses_running_stats(m)]
    reference, seen_nodes, output = _observed_run(model, x, observed, hooks, autograd=True)
    readers = _readers(output.grad_fn)
    by_node = {nodes[0]: name for name, nodes in conv_out.items() if len(nodes) == 1 and nodes[0] is not None}
    shared = _shared(model)
    pairs = []
    for norm, nodes in norm_in.items():
        conv = by_node.get(nodes[0]) if len(nodes) == 1 else None
        if (conv is not None and readers.get(nodes[0], 0) == 1 and nodes[0] not in seen_nodes
                and modules[conv].out_channels == modules[norm].num_features and not shared & {conv, norm}):
            pairs.append((conv, norm))
    return pairs, reference


def _observed_run(model: nn.Module, x: torch.Tensor, observed: list[str], hooks=(), autograd: bool = False):
    """Run ``model`` on ``x`` (with autograd on, or in inference mode); return the first output of each
    ``observed`` module and the model's output (key ``""``), copied as they were made (a later in-place
    operation must not change them), the autograd nodes of the observed outputs, and the model's output.
    ``hooks``: handles of further hooks, removed with these."""
    modules = dict(model.named_modules())
    found: dict[str, torch.Tensor] = {}
    nodes: set = set()

    def keep(name, value):
        value = value[0] if isinstance(value, (tuple, list)) else value
        if torch.is_tensor(value):
            nodes.add(value.grad_fn)
            if name not in found:
                found[name] = value.detach().clone()

    handles = [*hooks, *(modules[n].register_forward_hook(lambda _m, _i, out, n=n: keep(n, out))
                         for n in observed if n in modules)]
    try:
        with torch.enable_grad() if autograd else torch.inference_mode():
            output = _first_tensor(model(x.clone().requires_grad_(True) if autograd else x))
    finally:
        for handle in handles:
            handle.remove()
    found[""] = output.detach().clone()
    return found, nodes, output


def _uses_running_stats(norm: nn.Module) -> bool:
    return not norm.training and norm.running_mean is not None and norm.running_var is not None


def _example(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """One random image of ``shape`` on the model's device, laid out as the model's first weight is."""
    first = next((p for p in model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(_SEED)  # not the global random state
    x = torch.randn((1, *shape), generator=generator).to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _first_tensor(output):
    """The model's output, or the first tensor of a tuple/list/dict of outputs."""
    if torch.is_tensor(output):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(_first_tensor(v) for v in values)


def _readers(root) -> dict:
    """How many autograd nodes read each node's output, over the graph that made ``root``."""
    count: dict = {}
    stack, visited = [root], {root}
    while stack:
        node = stack.pop()
        for child, _ in getattr(node, "next_functions", ()):
            if child is None:
                continue
            count[child] = count.get(child, 0) + 1
            if child not in visited:
                visited.add(child)
                stack.append(child)
    return count


def _shared(model: nn.Module) -> set[str]:
    """Names of modules registered in more than one place (folding one would change the others)."""
    places: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        places.setdefault(id(module), []).append(name)
    return {n for names in places.values() if len(names) > 1 for n in names}


def _fold(model: nn.Module, pairs: list[tuple[str, str]], norms: dict):
    """Fold ``pairs`` in place; return the function that puts everything back."""
    undo = []
    for conv_name, norm_name in pairs:
        conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        weight, bias = conv.weight, conv.bias
        new_weight, new_bias = fuse_conv_bn_weights(weight, bias, norm.running_mean, norm.running_var, norm.eps,
                                                    norm.weight, norm.bias)
        if weight.is_contiguous(memory_format=torch.channels_last):
            new_weight = nn.Parameter(new_weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
        conv.weight, conv.bias = new_weight, new_bias
        parent_name, _, child = norm_name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, norms[type(norm)](norm))
        undo.append((conv, weight, bias, parent, child, norm))

    def restore():
        for conv, weight, bias, parent, child, norm in reversed(undo):
            conv.weight, conv.bias = weight, bias
            setattr(parent, child, norm)
        undo.clear()

    return restore


def _checked(model: nn.Module, x: torch.Tensor, observed: list[str], reference: dict[str, torch.Tensor],
             pairs: list[tuple[str, str]], count: int) -> Folding:
    """The folded model's outputs of ``x`` against the unfolded ones: a :class:`Folding`, with ``why_not`` set
    when they differ by more than :data:`TOLERANCE`."""
    if not pairs:
        return Folding((), count, why_not="no BatchNorm reads a convolution's output alone")
    found, _, _ = _observed_run(model, x, observed)
    worst = max(_relative(found.get(name), ref) for name, ref in reference.items())
    left = count - len(pairs)
    why = f"{left} BatchNorm layer(s) do not read a convolution's output alone" if left else None
    if worst > TOLERANCE:
        log.warning("folding BatchNorm changed the codes by %.2g of their size (more than %g); computing unfolded",
                    worst, TOLERANCE)
        return Folding((), count, worst, f"folded codes differed by {worst:.2g} of their size (over {TOLERANCE:g})")
    return Folding(tuple(pairs), count, worst, why)


def _relative(value: torch.Tensor | None, reference: torch.Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude (infinite if the output is gone)."""
    if value is None or value.shape != reference.shape:
        return float("inf")
    scale = float(reference.float().abs().max()) or 1.0
    return float((value.float() - reference.float()).abs().max()) / scale
