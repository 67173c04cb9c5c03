"""Which output each BatchNorm layer belongs to, by the order things run in the forward pass.

A BatchNorm layer belongs to the first extractable output that is produced at
or after it: the BatchNorm layers inside a stage belong to that stage, a stem's
to the first stage, a head's (``conv_head`` + ``bn2``) to ``pre_logits``. The
order comes from hooks on a real forward pass, never from module names, so
models whose names do not nest (torchvision's ``features.N``) or whose modules
are defined in another order than they run are assigned correctly. A BatchNorm
layer that runs after the last output, or never runs, belongs to none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .build import LoadedModel
from .layers import LOGITS, PRE_LOGITS, classifier_name


def batchnorm_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.modules.batchnorm._BatchNorm]]:
    """BatchNorm layers that carry running statistics, in module (definition) order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None
    ]


@dataclass(frozen=True)
class BatchNormMembers:
    """The BatchNorm layers in firing order, and which output each belongs to."""

    order: tuple[str, ...]  # every BatchNorm layer: those that ran, in firing order, then those that never ran
    members: dict[str, list[str]]  # output name -> its BatchNorm layers, in firing order
    after_last: tuple[str, ...] = ()  # ran after the last output: in no output
    never_ran: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"members": {k: list(v) for k, v in self.members.items()},
                "after_last": list(self.after_last), "never_ran": list(self.never_ran)}


def assign_by_firing(events: list[tuple[str, str]], outputs: list[str]) -> dict[str, list[str]]:
    """Partition BatchNorm layers among outputs from a firing sequence.

    ``events`` are ``("bn", name)`` and ``("output", name)`` in the order they
    happened (first firing of each only counts); every BatchNorm layer goes to
    the first output that fires after it. Returns ``{output: [bn, ...]}`` plus
    the key ``None`` for those after the last output.
    """
    result: dict[str | None, list[str]] = {name: [] for name in outputs}
    result[None] = []
    pending: list[str] = []
    seen: set[str] = set()
    for kind, name in events:
        if (kind, name) in seen:
            continue
        seen.add((kind, name))
        if kind == "bn":
            pending.append(name)
        elif name in result:
            result[name] += pending
            pending = []
    result[None] += pending
    return result


@torch.inference_mode()
def batchnorm_members(loaded: LoadedModel, outputs: list[str]) -> BatchNormMembers:
    """Trace one dummy image and assign every BatchNorm layer of ``loaded`` to one of ``outputs``.

    ``outputs`` are module names or ``pre_logits`` / ``logits``, as in the cache's layers.
    """
    module = loaded.module
    modules = dict(module.named_modules())
    events: list[tuple[str, str]] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=name: events.append(("bn", n)))
               for name, m in batchnorm_modules(module)]
    # registered after the BatchNorm hooks: an output that is itself a BatchNorm layer owns it ("at or after")
    for name in outputs:
        if name == PRE_LOGITS:
            head = modules[classifier_name(loaded)]
            handles.append(head.register_forward_pre_hook(lambda mod, i: events.append(("output", PRE_LOGITS))))
        elif name != LOGITS:
            handles.append(modules[name].register_forward_hook(
                lambda mod, i, o, n=name: events.append(("output", n))))
    was_training = module.training
    module.eval()
    try:
        module(torch.zeros((1, *loaded.preprocessing.input_size)))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    events.append(("output", LOGITS))
    assigned = assign_by_firing(events, list(outputs))
    fired = list(dict.fromkeys(name for kind, name in events if kind == "bn"))
    never = [name for name, _ in batchnorm_modules(module) if name not in fired]
    return BatchNormMembers(
        order=tuple(fired + never),
        members={name: assigned[name] for name in outputs},
        after_last=tuple(assigned[None]),
        never_ran=tuple(never),
    )
