"""The place where an adapter attaches: a frozen module of the base model plus named add-ons.

Every insertion point (a Linear that LoRA wraps, a sub-layer output that a bottleneck adapter
follows, a self-attention that prefix tuning extends, the classification head) becomes an
:class:`AdapterSite`. It keeps the original module as ``base_layer`` and one add-on per adapter
name in ``adapters``; the name in ``active_adapter`` decides which add-on runs. That is all that
several adapters on one frozen base need: switching task means switching a name.

A module that several sites of one adapter use (prefix tuning's encoder) is registered once on
the model, in ``model.shared_adapters[adapter name]``, and reached by the sites.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
from torch import nn

ADAPTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHARED = "shared_adapters"


def check_adapter_name(name: str) -> None:
    """A name usable as a module key: letters, digits, underscores, and no attribute of a module."""
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise ValueError(
            f"adapter name {name!r} is not valid; use letters, digits and underscores, e.g. 'sentiment'."
        )
    if hasattr(nn.ModuleDict(), name):  # `to`, `train`, `training`, `_modules`, ...
        raise ValueError(
            f"adapter name {name!r} is taken by a method of torch modules; choose another, e.g. '{name}_task'."
        )


class AdapterSite(nn.Module):
    """A base module with named add-ons; subclasses decide how the active add-on is combined."""

    stands_in_for_linear: ClassVar[bool] = False  # True where the site acts as the Linear it wraps (LoRA)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapters = nn.ModuleDict()
        self.active_adapter: str | None = None

    def add(self, name: str, module: nn.Module) -> None:
        self.adapters[name] = module

    @property
    def active(self) -> nn.Module | None:
        """The add-on of the active adapter, or None where this site has none for it."""
        if self.active_adapter is not None and self.active_adapter in self.adapters:
            return self.adapters[self.active_adapter]
        return None


class MergeableSite(AdapterSite):
    """A site whose active add-on can be folded into the base module's weights (and taken out again).

    ``merged_adapter`` names the adapter folded in, or is None. While it is set, the site computes
    with the base module alone, which now carries the update. :meth:`merge` keeps a copy of every
    tensor it changes and :meth:`unmerge` puts the copies back, so the base returns bit for bit;
    a method says which tensors it changes (:meth:`folded_tensors`) and how (:meth:`fold`).
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.merged_adapter: str | None = None
        self.originals: list[tuple[torch.Tensor, torch.Tensor]] = []  # (base tensor, its copy) while merged

    def folded_tensors(self) -> list[torch.Tensor]:
        """The base module's tensors that :meth:`fold` changes in place."""
        raise NotImplementedError

    def fold(self, add_on: nn.Module) -> None:
        """Fold ``add_on`` into :meth:`folded_tensors`, in place."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the active add-on into the base module's weights, keeping the originals."""
        if self.merged_adapter is not None:
            raise RuntimeError(
                f"adapter {self.merged_adapter!r} is already merged; call unmerge_adapter() first."
            )
        if self.active is None:
            return
        self.originals = [(tensor, tensor.clone()) for tensor in self.folded_tensors()]
        self.fold(self.active)
        self.merged_adapter = self.active_adapter

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put back the base module's weights as they were before :meth:`merge`."""
        if self.merged_adapter is None:
            return
        for tensor, original in self.originals:
            tensor.copy_(original)
        self.merged_adapter, self.originals = None, []


class HeadSite(AdapterSite):
    """The task head: each adapter trains its own copy, the original stays frozen."""

    def forward(self, x):
        head = self.active if self.active is not None else self.base_layer
        return head(x)


def add_shared(model: nn.Module, name: str, module: nn.Module) -> None:
    """Register ``module`` once on ``model`` as adapter ``name``'s shared module."""
    if not isinstance(getattr(model, SHARED, None), nn.ModuleDict):
        setattr(model, SHARED, nn.ModuleDict())
    getattr(model, SHARED)[name] = module


def shared_module(model: nn.Module, name: str) -> nn.Module | None:
    shared = getattr(model, SHARED, None)
    return shared[name] if shared is not None and name in shared else None


def site_parents(model: nn.Module) -> list[tuple[nn.Module, str, AdapterSite]]:
    """Every site of ``model`` with the module and attribute that hold it, outermost first."""
    found = []
    for parent in model.modules():
        for attribute, child in parent.named_children():
            if isinstance(child, AdapterSite):
                found.append((parent, attribute, child))
    return found


def remove_adapter_modules(model: nn.Module, name: str, keep_head: bool = False) -> None:
    """Take adapter ``name``'s add-ons out of every site; a site left empty (also one that a failed
    insertion left without any add-on) gives way to its base module again. ``keep_head``: a head
    site is replaced by this adapter's trained head instead."""
    for parent, attribute, site in site_parents(model):
        if keep_head and isinstance(site, HeadSite) and name in site.adapters:
            setattr(parent, attribute, site.adapters[name])
            continue
        if name in site.adapters:
            del site.adapters[name]
        if site.active_adapter == name:
            site.active_adapter = None
        if not site.adapters:
            setattr(parent, attribute, site.base_layer)
    shared = getattr(model, SHARED, None)
    if shared is not None:
        if name in shared:
            del shared[name]
        if not shared:
            delattr(model, SHARED)
