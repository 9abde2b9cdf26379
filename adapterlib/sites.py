"""The place where an adapter attaches: a frozen module of the base model plus named add-ons.

Every insertion point (a Linear that LoRA wraps, a sub-layer output that a bottleneck adapter
follows, the classification head) becomes an :class:`AdapterSite`. It keeps the original module
as ``base_layer`` and one add-on per adapter name in ``adapters``; the name in
``active_adapter`` decides which add-on runs. That is all that several adapters on one frozen
base need: switching task means switching a name.
"""

from __future__ import annotations

import re

from torch import nn

ADAPTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_adapter_name(name: str) -> None:
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise ValueError(
            f"adapter name {name!r} is not valid; use letters, digits and underscores, e.g. 'sentiment'."
        )


class AdapterSite(nn.Module):
    """A base module with named add-ons; subclasses decide how the active add-on is combined."""

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


class HeadSite(AdapterSite):
    """The task head: each adapter trains its own copy, the original stays frozen."""

    def forward(self, x):
        head = self.active if self.active is not None else self.base_layer
        return head(x)
