r"""Notebook 1 (the bottleneck in math): the learner writes the adapter module and its parameter count.

* ``1.bottleneck``: a class ``Bottleneck(d, r)`` with attributes ``down``, ``act``, ``up`` computing
  :math:`h + W_{up}\,\mathrm{ReLU}(W_{down} h)` (biases included), with ``up`` zero-initialised.
* ``1.count``: a function ``adapter_parameters(d, r, bias)`` returning :math:`2dr + d + r`
  (:math:`2dr` without biases).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import counting
from ..counting import method_parameter_count
from ..methods import adapter
from ..methods.adapter import AdapterConfig, BottleneckAdapter
from ..toy import ToyConfig
from . import NotYet, exercise
from .contract import call, nonfinite

D, R = 24, 4  # the shape the module is graded on: small, and r < d as in any real adapter


def in_symbols(shape: tuple[int, ...], d: int, r: int) -> str:
    """A shape in the learner's terms: ``(d, r)`` rather than the grader's ``(24, 4)``."""
    names = {d: "d", r: "r"}
    return "(" + ", ".join(names.get(size, str(size)) for size in shape) + ")"


def _build(module_class: type, d: int, r: int) -> nn.Module:
    module = module_class(d, r)
    if not isinstance(module, nn.Module):
        raise NotYet(f"Bottleneck(d, r) built a {type(module).__name__}; make the class an nn.Module.")
    for name in ("down", "act", "up"):
        if not hasattr(module, name):
            raise NotYet(f"your module has no attribute `{name}`; name the parts `down`, `act` and `up`.")
    for name, shape in (("down", (r, d)), ("up", (d, r))):
        weight = getattr(getattr(module, name), "weight", None)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape:
            found = (
                "no weight"
                if weight is None
                else f"a weight of shape {in_symbols(tuple(weight.shape), d, r)}"
            )
            raise NotYet(
                f"`{name}` has {found}, where nn.Linear stores {in_symbols(shape, d, r)}: `down` maps d -> r and "
                "`up` maps r -> d, written nn.Linear(in_features, out_features)."
            )
    odd = [(n, p.dtype) for n, p in module.named_parameters() if p.dtype != torch.float32]
    if odd:
        raise NotYet(
            f"`{odd[0][0]}` is {odd[0][1]}; the model around an adapter is float32, so keep nn.Linear's "
            "default dtype (no dtype= argument, no .double() or .half())."
        )
    return module


def _forward(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The module's output on ``h``, or NotYet if it is not a tensor of h's shape."""
    out = module(h)
    if not isinstance(out, torch.Tensor):
        raise NotYet(f"forward returned a {type(out).__name__}; an adapter returns one tensor, h + ... .")
    if tuple(out.shape) != tuple(h.shape):
        raise NotYet(
            f"on an input of shape (batch, tokens, d) your module returned {in_symbols(tuple(out.shape), D, R)}; "
            "an adapter returns a vector of the same width d for every token."
        )
    return out


def _copy_into_package_adapter(
    module: nn.Module, d: int, r: int, activation: str = "relu"
) -> BottleneckAdapter:
    """The package's adapter (default alpha = r, so scaling 1) carrying the learner's weights."""
    reference = BottleneckAdapter(d, r, activation=activation, bias=module.down.bias is not None)
    with torch.no_grad():
        for name in ("down", "up"):
            source, target = getattr(module, name), getattr(reference, name)
            target.weight.copy_(source.weight)
            if target.bias is not None:
                if getattr(source, "bias", None) is None:
                    raise NotYet(
                        f"`down` has a bias but `{name}` has none; give both Linear layers a bias "
                        "(nn.Linear's default)."
                    )
                target.bias.copy_(source.bias)
    return reference


def _grad_norm(parameter: torch.Tensor) -> float:
    return 0.0 if parameter.grad is None else parameter.grad.norm().item()


@exercise("1.bottleneck", kind="class", reference=lambda: BottleneckAdapter, forbidden=(adapter,))
def grade_bottleneck(module_class: type) -> str:
    """Identity at initialisation, equal to BottleneckAdapter on random weights, W_down's gradient gated by W_up."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        h = torch.randn(3, 5, D)

        module = _build(module_class, D, R)
        out = _forward(module, h)
        broken = nonfinite(out)
        if broken:
            raise NotYet(
                f"at initialisation your module's output has {broken}; h + W_up ReLU(W_down h) is finite."
            )
        change = (out - h).abs().max().item()
        if change > 0 and out.abs().max().item() == 0:
            raise NotYet(
                "at initialisation your module returned zeros, not h: the residual h + ... is missing."
            )
        if change > 0:
            raise NotYet(
                f"at initialisation your module changed its input by {change:.3g} (largest entry); "
                "with `up` zero-initialised (weight and bias) it must return h exactly."
            )

        with torch.no_grad():
            for parameter in module.parameters():
                parameter.normal_(0, 0.5)
        reference = _copy_into_package_adapter(module, D, R)
        out = _forward(module, h)
        gap = (out - reference(h)).abs().max().item()
        if gap > 1e-5:
            if torch.allclose(out, _copy_into_package_adapter(module, D, R, "gelu")(h), atol=1e-5):
                raise NotYet(
                    "with random weights your module matches a GELU adapter; this exercise asks for ReLU."
                )
            raise NotYet(
                f"with random weights your module's output differs from a bottleneck adapter's by {gap:.3g}; "
                "check the order down -> act -> up, the ReLU, and the residual h + ..."
            )

        module = _build(module_class, D, R)
        target = torch.randn(3, 5, D)
        out = _forward(module, h)
        if not out.requires_grad:
            raise NotYet(
                "your module's output carries no gradient: nothing in it would train. Is the forward pass "
                "run under torch.no_grad(), or detached (.detach())?"
            )
        (out * target).sum().backward()
        up_grad, down_grad = _grad_norm(module.up.weight), _grad_norm(module.down.weight)
        if up_grad == 0 and module.down.weight.detach().abs().max() == 0:
            raise NotYet(
                "`down` starts at zero as well as `up`: then ReLU(W_down h) = 0, W_up's gradient (which is "
                "that activation times the output's gradient) is zero too, and nothing ever trains. "
                "Zero-initialise `up` only; `down` keeps nn.Linear's random start."
            )
        if up_grad == 0:
            raise NotYet(
                "W_up received no gradient at the first step; is `up` a trainable nn.Linear on the forward path?"
            )
        if down_grad != 0:
            raise NotYet(
                f"W_down's gradient at the first step has norm {down_grad:.3g}; it must be exactly zero, "
                "since it passes through a zero W_up."
            )
        with torch.no_grad():
            module.up.weight.normal_(0, 0.5)
        module.zero_grad()
        (_forward(module, h) * target).sum().backward()
        if _grad_norm(module.down.weight) == 0:
            raise NotYet(
                "once W_up has moved, W_down still receives no gradient; does down's output reach `up` "
                "through `act` without being detached?"
            )
    return (
        f"identity at initialisation, same outputs as a bottleneck adapter on random weights (d={D}, r={R}), "
        "W_down's gradient zero at step one and non-zero once W_up moves."
    )


def reference_adapter_parameters(d: int, r: int, bias: bool = True) -> int:
    """Parameters of one bottleneck adapter: ``2dr + d + r`` with biases, ``2dr`` without."""
    return method_parameter_count(
        ToyConfig(hidden_size=d), AdapterConfig(r=r, bias=bias, placement="pfeiffer")
    )


COUNT_CASES = [
    (d, r, bias) for d in (8, 128, 384, 768, 1024) for r in (1, 2, 16, 64) if r <= d for bias in (True, False)
]


@exercise(
    "1.count",
    kind="function",
    reference=lambda: reference_adapter_parameters,
    forbidden=(counting, adapter),
)
def grade_count(adapter_parameters: Callable[..., int]) -> str:
    """Graded against the package's closed form on every case of COUNT_CASES."""
    wrong = []
    for d, r, bias in COUNT_CASES:
        expected = reference_adapter_parameters(d, r, bias)
        got = call(adapter_parameters, d, r, bias, what=f"for d={d}, r={r}, bias={bias}")
        if isinstance(got, bool) or not isinstance(got, int):
            raise NotYet(f"for d={d}, r={r}, bias={bias} your function returned {got!r}; a count is an int.")
        if got != expected:
            wrong.append((d, r, bias, got, "too few" if got < expected else "too many"))
    if wrong:
        d, r, bias, got, direction = wrong[0]
        with_bias = sum(1 for case in wrong if case[2])
        raise NotYet(
            f"wrong on {len(wrong)} of {len(COUNT_CASES)} cases ({with_bias} with biases, "
            f"{len(wrong) - with_bias} without); e.g. d={d}, r={r}, bias={bias}: you returned "
            f"{got:,}, {direction}."
        )
    return (
        f"right on all {len(COUNT_CASES)} cases (d from 8 to 1024, r from 1 to 64, with and without biases)."
    )
