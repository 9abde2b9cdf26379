"""Notebook 4's exercises: right answers pass, typical mistakes are named, package code is refused."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from adapterlib import LoraLinear
from adapterlib.checkpoint import WEIGHTS_FILE, read_adapter_config
from adapterlib.exercises import NotYet, Unanswered, check, grade
from adapterlib.exercises.nb04 import LoRALinear as PackageLoRALinear
from adapterlib.exercises.nb04 import package_replace_linear_with_lora

pytest.importorskip("peft", reason="the LoRA layer is graded against peft's; install requirements.txt")


class RightLoRALinear(nn.Module):
    """A correct answer to 4.lora_linear."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.A, a=5**0.5)
        self.scaling = alpha / r
        self.merged = False

    def delta(self) -> torch.Tensor:
        return self.scaling * self.B @ self.A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y if self.merged else y + (x @ self.A.T @ self.B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta()
            self.merged = False


class StrictMerge(RightLoRALinear):
    """Also right: a second merge raises instead of doing nothing."""

    def merge(self) -> None:
        if self.merged:
            raise RuntimeError("already merged")
        super().merge()


class NoScaling(RightLoRALinear):
    def forward(self, x):
        y = self.base(x)
        return y if self.merged else y + x @ self.A.T @ self.B.T


class NonZeroB(RightLoRALinear):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        nn.init.kaiming_uniform_(self.B, a=5**0.5)


class ZeroA(RightLoRALinear):
    """A and B initialised the other way round: A at zero, B random."""

    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        with torch.no_grad():
            self.A.zero_()


class TrainableBase(RightLoRALinear):
    def __init__(self, base, r, alpha):
        super().__init__(base.requires_grad_(True), r, alpha)
        self.base.requires_grad_(True)


class MergesTwice(RightLoRALinear):
    """No merged flag: every merge() adds the update again."""

    @torch.no_grad()
    def merge(self):
        self.base.weight += self.delta()
        self.merged = True


class MergedForwardAddsAgain(RightLoRALinear):
    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling


class UnmergeOnlyFlips(RightLoRALinear):
    """unmerge() forgets to subtract the update from W."""

    def unmerge(self):
        self.merged = False


class MergeNotWritten(RightLoRALinear):
    def merge(self):
        raise NotImplementedError("write LoRALinear.merge")


class Template(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        raise NotImplementedError("write LoRALinear.__init__")


def test_right_lora_layers_pass():
    assert "peft" in grade("4.lora_linear", RightLoRALinear)
    grade("4.lora_linear", StrictMerge)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (NoScaling, "times the size"),
        (NonZeroB, "at initialisation"),
        (ZeroA, "A starts at zero"),
        (TrainableBase, "still trainable"),
        (MergesTwice, "second time"),
        (MergedForwardAddsAgain, "must not add B A x again"),
        (UnmergeOnlyFlips, "after unmerge() base.weight"),
        (MergeNotWritten, "merge()"),
    ],
)
def test_lora_layer_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message.replace("(", r"\(").replace(")", r"\)")):
        grade("4.lora_linear", wrong)


@pytest.mark.parametrize("package_class", [LoraLinear, PackageLoRALinear])
def test_package_lora_layers_are_refused(package_class):
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("4.lora_linear", package_class)


def test_unanswered_lora_layer_falls_back_to_the_package(capsys):
    with pytest.raises(Unanswered):
        grade("4.lora_linear", Template)
    fallback = check("4.lora_linear", Template)
    assert fallback is PackageLoRALinear and "Not answered yet" in capsys.readouterr().out
    layer = fallback(nn.Linear(6, 5), r=2, alpha=4)
    assert layer.A.shape == (2, 6) and layer.B.shape == (5, 2) and layer.scaling == 2


# ---------------------------------------------------------------- 4.inject


def make_replace(
    layer_class: type,
    matches: Callable[[str, list[str]], bool],
    freeze: bool = True,
    returns_names: bool = True,
) -> Callable:
    """A replace_linear_with_lora built from the given pieces, right or wrong."""

    def replace(model, targets, r, alpha):
        if freeze:
            model.requires_grad_(False)
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and matches(n, targets)]
        for name in names:
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, attribute, layer_class(getattr(parent, attribute), r, alpha))
        return names if returns_names else None

    return replace


def suffix_match(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def every_linear(name, targets):
    return True


def substring_match(name, targets):
    """`target in name`: "attention" then catches attention.self.query, which does not end with ".attention"."""
    return any(t in name for t in targets)


def replace_while_walking(model, targets, r, alpha):
    """Replaces each match inside the named_modules() loop instead of collecting the names first."""
    model.requires_grad_(False)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and suffix_match(name, targets):
            parent_name, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attribute, RightLoRALinear(module, r, alpha))
            names.append(name)
    return names


def last_part_match(name, targets):
    """Compares only the attribute name, so a dotted target such as "output.dense" matches nothing."""
    return name.rsplit(".", 1)[-1] in targets


def test_right_injection_passes_with_either_lora_layer():
    assert "get_peft_model" in grade("4.inject", make_replace(RightLoRALinear, suffix_match))
    grade("4.inject", make_replace(PackageLoRALinear, suffix_match))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (make_replace(RightLoRALinear, every_linear), "not targets"),
        (make_replace(RightLoRALinear, substring_match), '"attention" occurs inside that name'),
        (make_replace(RightLoRALinear, last_part_match), "were not wrapped"),
        (make_replace(RightLoRALinear, suffix_match, freeze=False), "still trainable"),
        (make_replace(RightLoRALinear, suffix_match, returns_names=False), "returned list"),
        (make_replace(NoScaling, suffix_match), "differs from get_peft_model"),
        (make_replace(NonZeroB, suffix_match), "at initialisation"),
    ],
)
def test_injection_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("4.inject", wrong)


def test_replacing_inside_the_walk_gives_the_same_model():
    """Setting an existing child while named_modules() walks only swaps a dict value: the walk goes on unharmed,
    so the grader has nothing to object to (if PyTorch ever changes that, this test says so)."""
    assert "get_peft_model" in grade("4.inject", replace_while_walking)


def test_package_injection_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("4.inject", package_replace_linear_with_lora)

    def template(model, targets, r, alpha):
        raise NotImplementedError("write replace_linear_with_lora")

    assert check("4.inject", template) is package_replace_linear_with_lora
    assert "Not answered yet" in capsys.readouterr().out


# ---------------------------------------------------------------- 4.scaling


def test_scaling_number():
    grade("4.scaling", 1)
    grade("4.scaling", 1.0)
    assert "learning rate" in grade("4.scaling", 1)
    for wrong, message in (
        (0.5, "how much the factor changes"),
        (2, "factor at r = 8"),
        (4, "not the factor"),
        ("1", "should be a plain number"),
    ):
        with pytest.raises(NotYet, match=message):
            grade("4.scaling", wrong)
    assert check("4.scaling", ...) is Ellipsis


# ---------------------------------------------------------------- the committed adapter


def test_committed_lora_adapter_is_the_notebooks_recipe_and_small():
    directory = Path(__file__).parents[1] / "notebooks" / "trained" / "lora"
    meta = read_adapter_config(directory)
    assert meta["peft_config"] == {
        "method": "lora",
        "task_type": "SEQ_CLS",
        "r": 8,
        "alpha": 16,
        "dropout": 0.1,
        "target_modules": ["query", "value"],
    }
    assert (
        meta["base_model_shape"]["hidden_size"] == 384 and meta["base_model_shape"]["num_hidden_layers"] == 6
    )
    assert (directory / WEIGHTS_FILE).stat().st_size < 1_000_000
