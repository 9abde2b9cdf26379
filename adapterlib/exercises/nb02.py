r"""Notebook 2 (an adapter inside a Transformer layer): the learner freezes parameters and inserts an adapter.

* ``2.freeze``: ``freeze_all_but(model, keep)`` sets ``requires_grad = keep(name)`` on every named parameter
  and returns the number of trainable parameters (numbers, not tensors).
* ``2.insert``: ``add_adapter(layer, r)`` freezes a :class:`~adapterlib.toy.TransformerLayer` and makes it
  return ``adapter(h)`` :math:`= h + A(h)` (the adapter adds the residual itself), :math:`A` a bottleneck of
  width :math:`r` with biases and
  :math:`h` the output of the feed-forward block (after its LayerNorm): the Pfeiffer placement.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .. import inject, peft_model
from ..counting import method_parameter_count
from ..methods.adapter import AdapterConfig, BottleneckAdapter
from ..toy import TransformerLayer
from . import NotYet, exercise

D, HEADS, D_FF, R = 32, 4, 64, 4  # the layer the answers are graded on: small and fast


def _layer() -> TransformerLayer:
    return TransformerLayer(d_model=D, num_heads=HEADS, d_ff=D_FF, dropout=0.0)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of 6 tokens, the second padded after 4."""
    x = torch.randn(2, 6, D)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return x, mask


def reference_freeze_all_but(model: nn.Module, keep: Callable[[str], bool]) -> int:
    """Train exactly the parameters whose name satisfies ``keep``; return how many numbers train."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(keep(name))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


KEEP_RULES: list[tuple[str, Callable[[str], bool]]] = [
    ("names containing 'LayerNorm'", lambda name: "LayerNorm" in name),
    ("names starting with 'attention.'", lambda name: name.startswith("attention.")),
    ("names ending in 'bias'", lambda name: name.endswith("bias")),
    ("no name", lambda name: False),
    ("every name", lambda name: True),
]


@exercise("2.freeze", kind="function", reference=lambda: reference_freeze_all_but)
def grade_freeze(freeze_all_but: Callable[[nn.Module, Callable[[str], bool]], int]) -> str:
    """Five rules, each on a layer whose parameters start half frozen, half trainable."""
    for description, keep in KEEP_RULES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _layer()
        for i, parameter in enumerate(model.parameters()):
            parameter.requires_grad_(i % 2 == 0)
        expected = {name: bool(keep(name)) for name, _ in model.named_parameters()}
        values = {name: p.detach().clone() for name, p in model.named_parameters()}
        returned = freeze_all_but(model, keep)
        moved = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), values[name])]
        if moved:
            raise NotYet(
                f"keeping {description}, your function changed the values of `{moved[0]}`; freezing sets "
                "requires_grad only and leaves the weights as they are."
            )
        if isinstance(returned, bool) or not isinstance(returned, int):
            raise NotYet(
                f"keeping {description}, your function returned {type(returned).__name__} {returned!r}; "
                "return the number of trainable parameters, an int."
            )
        for name, parameter in model.named_parameters():
            if parameter.requires_grad != expected.get(name, False):
                state = "trainable" if parameter.requires_grad else "frozen"
                raise NotYet(
                    f"keeping {description}, `{name}` is {state} afterwards; every parameter must end up "
                    "trainable if keep(name) is true and frozen if not, whatever it was before."
                )
        trainable = [p for p in model.parameters() if p.requires_grad]
        if returned != sum(p.numel() for p in trainable):
            tensors = (
                " (that is the number of trainable tensors; count numbers, p.numel())"
                if returned == len(trainable)
                else ""
            )
            raise NotYet(
                f"keeping {description}, your function returned {returned!r}, which is not the number of "
                f"parameters it left trainable{tensors}."
            )
    return f"right on {len(KEEP_RULES)} rules, from parameters that started half frozen, half trainable."


def reference_add_adapter(layer: TransformerLayer, r: int) -> TransformerLayer:
    """Freeze ``layer``; the FFN block's LayerNorm is followed by a bottleneck adapter of width ``r``."""
    layer.requires_grad_(False)
    adapter = BottleneckAdapter(layer.config.hidden_size, r)
    layer.output.LayerNorm = nn.Sequential(layer.output.LayerNorm, adapter)
    return layer


def _the_adapter(model: nn.Module) -> nn.Module:
    adapters = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "down", None), nn.Module) and isinstance(getattr(m, "up", None), nn.Module)
    ]
    if len(adapters) != 1:
        raise NotYet(
            f"found {len(adapters)} modules with `down` and `up` in your layer; there should be one adapter "
            "(adapterlib.BottleneckAdapter or your Bottleneck from notebook 1)."
        )
    return adapters[0]


@exercise(
    "2.insert",
    kind="function",
    reference=lambda: reference_add_adapter,
    forbidden=(
        peft_model.get_peft_model,
        inject,
    ),  # BottleneckAdapter itself is allowed: it is notebook 1's answer
)
def grade_insert(add_adapter: Callable[[TransformerLayer, int], nn.Module]) -> str:
    """Base frozen, output unchanged at initialisation, closed-form count, base weights kept,
    adapter on the FFN output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = _layer().eval()
        frozen = copy.deepcopy(layer)
        x, mask = _inputs()
        base_names = {id(p): name for name, p in layer.named_parameters()}
        model = add_adapter(layer, R)
        if not isinstance(model, nn.Module):
            raise NotYet(
                f"your function returned {type(model).__name__}; return the layer, with its adapter."
            )
        model.eval()
        parameters = dict(model.named_parameters())

        still_trainable = [
            base_names[id(p)] for p in parameters.values() if id(p) in base_names and p.requires_grad
        ]
        if still_trainable:
            raise NotYet(
                f"the base layer is still trainable: {len(still_trainable)} of its {len(base_names)} tensors "
                f"have requires_grad=True (e.g. `{still_trainable[0]}`); freeze everything but the adapter."
            )

        kept = {base_names[id(p)]: p for p in parameters.values() if id(p) in base_names}
        for name, original in frozen.named_parameters():
            moved = (kept[name] - original).abs().max().item() if name in kept else 0.0
            if moved > 0:
                raise NotYet(
                    f"your function changed the base weight `{name}` (by up to {moved:.3g}); "
                    "leave the layer's own weights as they are."
                )

        with torch.no_grad():
            out, base_out = model(x, mask), frozen(x, mask)
        if not isinstance(out, torch.Tensor) or out.shape != base_out.shape:
            found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise NotYet(
                f"your layer returned {found} where the layer returns a tensor of shape (batch, tokens, d) "
                f"= {tuple(base_out.shape)}; the adapter changes values, not shapes."
            )
        change = (out - base_out).abs().max().item()
        if change > 1e-6 and torch.allclose(out, 2 * base_out, atol=1e-5):
            raise NotYet(
                "at initialisation your layer returns 2h, twice the frozen layer's output: the residual is "
                "doubled. BottleneckAdapter (like your Bottleneck from notebook 1) already returns h + A(h), "
                "so the layer should return adapter(h), not h + adapter(h)."
            )
        if change > 1e-6:
            raise NotYet(
                f"at initialisation your layer's output differs from the frozen layer's by {change:.3g} "
                "(largest entry); the adapter must add to the feed-forward block's output, with its residual "
                "and a zero W_up, and replace nothing."
            )

        new = [p for p in parameters.values() if id(p) not in base_names]
        trainable = sum(p.numel() for p in new if p.requires_grad)
        closed_form = method_parameter_count(frozen.config, AdapterConfig(r=R, placement="pfeiffer"))
        if trainable == 0:
            raise NotYet(
                "nothing in your layer trains; freeze the base first, then add the adapter (a new module "
                "is trainable unless you freeze it)."
            )
        if trainable != closed_form:
            direction = "more" if trainable > closed_form else "fewer"
            raise NotYet(
                f"your layer trains {trainable:,} parameters, {direction} than one bottleneck adapter of "
                f"width r={R} with biases (2dr + d + r)."
            )

        missing = [name for name, _ in frozen.named_parameters() if name not in kept]
        if missing:
            raise NotYet(
                f"the base weight `{missing[0]}` is no longer in your layer; add the adapter around the "
                "existing modules of the layer you are given, do not replace or copy them."
            )

        adapter = _the_adapter(model)
        with torch.no_grad():
            for parameter in new:
                parameter.normal_(0, 0.3)
            base_out = frozen(x, mask)
            out = model(x, mask)
            if (out - base_out).abs().max().item() < 1e-4:
                raise NotYet(
                    "with the adapter's weights moved, your layer's output does not change: the adapter is "
                    "not on the forward path (the layer's forward never calls it)."
                )
            gap = (out - adapter(base_out)).abs().max().item()
        if gap > 1e-4:
            raise NotYet(
                f"with the adapter's weights moved, your layer's output is not adapter(h), h the feed-forward "
                f"block's output (off by {gap:.3g}); the adapter belongs after `output.LayerNorm`, not after "
                "the attention block or inside a sub-layer."
            )
    return (
        f"base frozen, output unchanged at initialisation, {trainable:,} trainable parameters as in 2dr + d + r "
        f"(d={D}, r={R}), base weights untouched, and the adapter acts on the feed-forward block's output."
    )
