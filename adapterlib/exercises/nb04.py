r"""Exercises of notebook 4 (LoRA): a LoRA layer with merging, and injecting it into BERT by name.

The layer computes :math:`y = W x + b + \frac{\alpha}{r} B A x` and is graded against the package's
:class:`~adapterlib.lora.LoraLinear` and against peft's LoRA layer, given the same :math:`A` and
:math:`B`. The injection is graded on a tiny random ``BertModel`` against ``get_peft_model``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import BertConfig, BertModel

from .. import inject, peft_model
from ..methods import dora, lora
from ..methods.lora import LoraConfig, LoraLinear, LoraUpdate
from ..peft_model import get_peft_model
from . import NotYet, close_enough, exercise
from .contract import nonfinite

IN_FEATURES, OUT_FEATURES, R, ALPHA = 12, 10, 4, 6  # alpha / r = 1.5: catches r / alpha and alpha // r
FLOAT_TOLERANCE = 1e-5


# ---------------------------------------------------------------- what the notebook falls back on


class LoRALinear(LoraLinear):
    """The package's ``LoraLinear`` behind the notebook's interface ``LoRALinear(base, r, alpha)``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__(base.requires_grad_(False))
        self.add("default", LoraUpdate(base.in_features, base.out_features, r, alpha))
        self.active_adapter = "default"

    @property
    def base(self) -> nn.Linear:
        return self.base_layer

    @property
    def A(self) -> nn.Parameter:
        return self.active.A

    @property
    def B(self) -> nn.Parameter:
        return self.active.B

    @property
    def scaling(self) -> float:
        return self.active.scaling


def is_target(name: str, targets: Sequence[str]) -> bool:
    """A module name matches a target when it is the target or ends with ``"." + target``."""
    return any(name == t or name.endswith("." + t) for t in targets)


def package_replace_linear_with_lora(
    model: nn.Module, targets: Sequence[str], r: int, alpha: float
) -> list[str]:
    """Wrap each target ``nn.Linear`` of ``model`` in the package's LoRA layer; freeze the rest."""
    model.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_target(n, targets)]
    for name in names:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attribute, LoRALinear(getattr(parent, attribute), r, alpha))
    return names


# ---------------------------------------------------------------- helpers


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def lora_parameters(layer: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """The layer's ``A`` and ``B``, or NotYet naming what is missing or misshapen."""
    found = []
    for name in ("A", "B"):
        value = getattr(layer, name, None)
        if not isinstance(value, nn.Parameter):
            raise NotYet(f"your layer has no nn.Parameter named `{name}` (found {type(value).__name__}).")
        found.append(value)
    return found[0], found[1]


def in_symbols(shape: tuple[int, ...], in_features: int, out_features: int, r: int) -> str:
    """A shape in the learner's terms, ``(in_features, r)``, rather than the grader's numbers."""
    names = {in_features: "in_features", out_features: "out_features", r: "r"}
    return "(" + ", ".join(names.get(size, str(size)) for size in shape) + ")"


def check_shapes(A: torch.Tensor, B: torch.Tensor, in_features: int, out_features: int, r: int) -> None:
    for name, matrix, wanted, says in (
        ("A", A, (r, in_features), "A maps the input down to r numbers: r x in_features"),
        ("B", B, (out_features, r), "B maps r numbers up to the output: out_features x r"),
    ):
        if tuple(matrix.shape) != wanted:
            shape = in_symbols(tuple(matrix.shape), in_features, out_features, r)
            transposed = " (transposed)" if tuple(matrix.shape) == wanted[::-1] else ""
            raise NotYet(f"{name} has shape {shape}{transposed}; {says}, like an nn.Linear weight.")
        if matrix.dtype != torch.float32:
            raise NotYet(
                f"{name} is {matrix.dtype}; keep the base layer's float32 (no dtype= argument, no .double())."
            )


def package_layer(base: nn.Linear, A: torch.Tensor, B: torch.Tensor, r: int, alpha: float) -> LoraLinear:
    """The package's LoRA layer on a copy of ``base``, holding the given A and B."""
    site = LoraLinear(copy.deepcopy(base))
    site.add("default", LoraUpdate(base.in_features, base.out_features, r, alpha))
    site.active_adapter = "default"
    with torch.no_grad():
        site.active.A.copy_(A)
        site.active.B.copy_(B)
    return site


def peft_layer(base: nn.Linear, A: torch.Tensor, B: torch.Tensor, r: int, alpha: float) -> nn.Module:
    """peft's LoRA layer on a copy of ``base``, holding the given A and B."""
    import peft
    from peft.tuners.lora import Linear as PeftLoraLinear

    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0)
    layer = PeftLoraLinear(
        copy.deepcopy(base), "default", config=config, r=r, lora_alpha=alpha, lora_dropout=0.0
    )
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
    return layer


def call_method(layer: nn.Module, method: str) -> None:
    """Call ``layer.merge()`` or ``layer.unmerge()``; NotYet if it is missing or still the template."""
    if not callable(getattr(layer, method, None)):
        raise NotYet(f"your layer has no `{method}()` method.")
    try:
        getattr(layer, method)()
    except NotImplementedError:
        raise NotYet(f"the layer itself works; `{method}()` still raises NotImplementedError.") from None


# ---------------------------------------------------------------- 4.lora_linear


def learner_output(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's output on ``x``, or NotYet if it is not a tensor of the base layer's output shape."""
    out = layer(x)
    if not isinstance(out, torch.Tensor):
        raise NotYet(
            f"forward returned a {type(out).__name__}; a LoRA layer returns one tensor, W x + b + ... ."
        )
    if out.shape[-1:] != (OUT_FEATURES,) or out.shape[:-1] != x.shape[:-1]:
        raise NotYet(
            f"on an input of shape (..., in_features) your layer returned "
            f"{in_symbols(tuple(out.shape), IN_FEATURES, OUT_FEATURES, R)}; it returns (..., out_features), like the "
            "base layer."
        )
    broken = nonfinite(out)
    if broken:
        raise NotYet(f"your layer's output has {broken}; W x + b + (alpha/r) B A x is finite for finite x.")
    return out


@exercise(
    "4.lora_linear",
    kind="class",
    reference=lambda: LoRALinear,
    forbidden=(lora, dora, __import__("peft").tuners.lora.layer),
)
def grade_lora_linear(layer_class: type) -> str:
    """A LoRA layer: starts at the base layer, matches adapterlib and peft, merges once, unmerges exactly."""
    torch.manual_seed(0)  # the framework puts the learner's random state back afterwards
    base = nn.Linear(IN_FEATURES, OUT_FEATURES)
    original_weight = base.weight.detach().clone()
    reference_base = copy.deepcopy(base)
    layer = layer_class(base, R, ALPHA)
    A, B = lora_parameters(layer)
    check_shapes(A, B, IN_FEATURES, OUT_FEATURES, R)
    x = torch.randn(2, 3, IN_FEATURES)

    with torch.no_grad():
        start = max_difference(learner_output(layer, x), reference_base(x))
    if start > 1e-6:
        raise NotYet(
            f"at initialisation your layer changed the Linear's output by {start:.3g}; "
            "LoRA must start exactly at the pre-trained layer (which of A and B starts at zero?)."
        )
    if A.detach().abs().max() == 0:
        raise NotYet(
            "A starts at zero: with B = 0 as well, no gradient reaches either matrix and nothing trains."
        )

    trainable = [p for p in layer.parameters() if p.requires_grad]
    if any(p is base.weight or p is base.bias for p in trainable):
        raise NotYet("the base layer's weight or bias is still trainable; LoRA freezes W and b.")
    if {id(p) for p in trainable} != {id(A), id(B)}:
        raise NotYet(f"{len(trainable)} parameter tensors are trainable; only A and B should be.")

    out = learner_output(layer, x)
    if not out.requires_grad:
        raise NotYet(
            "your layer's output carries no gradient, so A and B would never train: is the update computed "
            "under torch.no_grad() or detached (.detach())?"
        )
    out.pow(2).sum().backward()
    if B.grad is None or B.grad.abs().max() == 0:
        raise NotYet(
            "no gradient reached B after a backward pass; the update must use A and B in forward, "
            "without .detach()."
        )

    with torch.no_grad():
        B.normal_(0, 0.5)  # as if training had moved B
        ours = learner_output(layer, x)
        package = package_layer(reference_base, A, B, R, ALPHA)(x)
        theirs = peft_layer(reference_base, A, B, R, ALPHA)(x)
    to_package, to_peft = max_difference(ours, package), max_difference(ours, theirs)
    if to_package > FLOAT_TOLERANCE:
        update, expected_update = ours - reference_base(x), package - reference_base(x)
        ratio = (update.norm() / expected_update.norm()).item()
        raise NotYet(
            f"with the same A and B your output differs from adapterlib's LoraLinear by {to_package:.3g} "
            f"(your update B A x is {ratio:.3g} times the size it should be for alpha={ALPHA}, r={R})."
        )
    if to_peft > FLOAT_TOLERANCE:
        raise NotYet(f"with the same A and B your output differs from peft's LoRA layer by {to_peft:.3g}.")

    delta = (package_layer(reference_base, A, B, R, ALPHA).active.delta_weight()).detach()
    call_method(layer, "merge")
    with torch.no_grad():
        merged_change = max_difference(base.weight, original_weight + delta)
        if merged_change > FLOAT_TOLERANCE:
            raise NotYet(f"after merge() base.weight is {merged_change:.3g} away from W + (alpha/r) B A.")
        merged = max_difference(learner_output(layer, x), ours)
    if merged > FLOAT_TOLERANCE:
        raise NotYet(
            f"after merge() the output changed by {merged:.3g}: a merged layer must not add B A x again."
        )

    merged_weight = base.weight.detach().clone()
    try:
        layer.merge()
    except (RuntimeError, ValueError):
        pass  # refusing a second merge is as good as ignoring it
    twice = max_difference(base.weight, merged_weight)
    if twice > 0:
        raise NotYet(
            f"calling merge() a second time changed the weight again by {twice:.3g}; "
            "the update must be folded in once."
        )

    call_method(layer, "unmerge")
    restored = max_difference(base.weight, original_weight)
    if restored > 1e-6:
        raise NotYet(f"after unmerge() base.weight is {restored:.3g} away from the original W.")
    with torch.no_grad():
        unmerged = max_difference(learner_output(layer, x), ours)
    if unmerged > FLOAT_TOLERANCE:
        raise NotYet(
            f"after unmerge() the output differs from before merging by {unmerged:.3g}; "
            "an unmerged layer adds the update in forward again."
        )
    layer.unmerge()
    again = max_difference(base.weight, original_weight)
    if again > 1e-6:
        raise NotYet(f"calling unmerge() on an unmerged layer moved the weight by {again:.3g}.")
    return (
        "starts at the base layer, only A and B train, same output as adapterlib's and peft's LoRA "
        f"(largest difference {max(to_package, to_peft):.1e}), merge() folds the update in once, unmerge() restores W."
    )


# ---------------------------------------------------------------- 4.inject


def tiny_bert(seed: int = 0) -> BertModel:
    """A random 2-layer BERT encoder (no pooler) small enough to grade on in milliseconds."""
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertModel(config, add_pooling_layer=False).eval()


def tiny_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(1, 100, (2, 6), generator=generator),
        "attention_mask": torch.tensor([[1] * 6, [1] * 3 + [0] * 3]),
    }


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost modules of ``model`` that carry LoRA matrices ``A`` and ``B``, by name."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():  # parents come before their children
        has_lora = all(isinstance(getattr(module, p, None), nn.Parameter) for p in ("A", "B"))
        if has_lora and not any(name.startswith(outer + ".") for outer in found):
            found[name] = module
    return found


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def extra_modules_message(targets: tuple[str, ...], extra: list[str]) -> str:
    """Name the modules wrapped that are not targets and, if it explains them, substring matching."""
    message = f"with targets {list(targets)} you wrapped {len(extra)} module(s) that are not targets, e.g. {extra[0]}."
    inside = [t for t in targets if t in extra[0]]
    if inside:
        message += (
            f' "{inside[0]}" occurs inside that name, but a name matches a target only when it equals the '
            f'target or ends with ".{inside[0]}"; `target in name` also catches names that merely contain it.'
        )
    return message


def grade_one_injection(replace: Callable, targets: tuple[str, ...]) -> float:
    """Grade ``replace`` for one target list; return its largest difference to the package.

    Targets that match no name by the suffix rule are left out of the reference (the package
    refuses them); the learner's function must wrap nothing for them.
    """
    model, original = tiny_bert(), tiny_bert()
    matching = tuple(t for t in targets if any(is_target(n, [t]) for n in linear_names(original)))
    reference = get_peft_model(
        tiny_bert(), LoraConfig(r=R, alpha=ALPHA, dropout=0.0, target_modules=matching)
    )
    expected = {
        n.removeprefix("base_model."): m for n, m in reference.named_modules() if isinstance(m, LoraLinear)
    }

    returned = replace(model, list(targets), R, ALPHA)
    if returned is not None and (
        not isinstance(returned, (list, tuple)) or not all(isinstance(n, str) for n in returned)
    ):
        raise NotYet(
            f"your function returned {type(returned).__name__}; return the list of the names of the modules it wrapped."
        )
    wrapped = lora_modules(model)
    extra, missing = sorted(set(wrapped) - set(expected)), sorted(set(expected) - set(wrapped))
    if extra:
        raise NotYet(extra_modules_message(targets, extra))
    if missing:
        raise NotYet(
            f"with targets {list(targets)} {len(missing)} target Linear layer(s) were not wrapped, "
            f"e.g. {missing[0]}."
        )
    if returned is None or sorted(returned) != sorted(wrapped):
        raise NotYet(
            "the returned list should hold the names of exactly the modules you wrapped "
            f"({len(wrapped)} of them); it holds {0 if returned is None else len(returned)}."
        )

    batch = tiny_batch()
    with torch.no_grad():
        start = max_difference(model(**batch).last_hidden_state, original(**batch).last_hidden_state)
    if start > 1e-6:
        raise NotYet(
            f"at initialisation the wrapped model's output differs from the original by {start:.3g}."
        )

    lora = {id(p) for m in wrapped.values() for p in (m.A, m.B)}
    still_trainable = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in lora]
    if still_trainable:
        raise NotYet(
            f"{len(still_trainable)} parameter tensors of the base model are still trainable, "
            f"e.g. {still_trainable[0]}; only the LoRA matrices should train."
        )
    frozen_lora = [n for n, m in wrapped.items() if not (m.A.requires_grad and m.B.requires_grad)]
    if frozen_lora:
        raise NotYet(f"the LoRA matrices of {frozen_lora[0]} are frozen; they are what trains.")

    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, module in wrapped.items():
            module.B.copy_(torch.randn(module.B.shape, generator=generator) * 0.5)
            expected[name].active.A.copy_(module.A)
            expected[name].active.B.copy_(module.B)
        difference = max_difference(model(**batch).last_hidden_state, reference(**batch).last_hidden_state)
    if difference > FLOAT_TOLERANCE:
        raise NotYet(
            f"given the same A and B, your model's output differs from get_peft_model's by {difference:.3g}."
        )
    return difference


@exercise(
    "4.inject",
    kind="function",
    reference=lambda: package_replace_linear_with_lora,
    # the LoRA layer itself may be the package's (the fallback of 4.lora_linear); the injection may not
    forbidden=(peft_model.get_peft_model, inject, __import__("peft").get_peft_model),
)
def grade_inject(replace: Callable) -> str:
    """Injection by name on a tiny BERT, against ``get_peft_model(model, LoraConfig(target_modules=...))``."""
    target_lists = [("query", "value"), ("key", "output.dense"), ("value", "attention")]
    differences = [grade_one_injection(replace, targets) for targets in target_lists]
    return (
        f"on a tiny BERT with targets {[list(t) for t in target_lists]}: the same modules as get_peft_model, "
        f"output unchanged at the start, only A and B trainable, same outputs given the same A and B "
        f"(largest difference {max(differences):.1e})."
    )


# ---------------------------------------------------------------- 4.scaling (a number)


def scaling_for(alpha: float, r: int) -> float:
    return alpha / r


@exercise("4.scaling", kind="number")
def grade_scaling(answer: float) -> str:
    """The factor applied to B A with alpha = 16 and r = 16."""
    if close_enough(answer, scaling_for(16, 16) / scaling_for(16, 8)):
        raise NotYet(
            f"{answer:g} is how much the factor changes when r doubles; the question asks for the factor "
            "itself, the number that multiplies B A once r is 16."
        )
    if close_enough(answer, scaling_for(16, 8)):
        raise NotYet(f"{answer:g} is the factor at r = 8; the question doubles r and keeps alpha.")
    if not close_enough(answer, scaling_for(16, 16)):
        raise NotYet(
            f"{answer:g} is not the factor that multiplies B A for alpha = 16, r = 16 "
            "(look at how the scaling is defined)."
        )
    return (
        f"{answer:g}: with alpha fixed, doubling r halves the factor. Every rank starts at Delta W = 0 (B = 0); "
        "what alpha / r buys is that the size of the update does not grow with r, so the learning rate "
        "need not be retuned when you change r."
    )
