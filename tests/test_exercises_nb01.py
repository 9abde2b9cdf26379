"""Notebook 1's graders: the right answers pass, typical mistakes fail with the behaviour named."""

import pytest
import torch
from torch import nn

import adapterlib
from adapterlib.counting import method_parameter_count
from adapterlib.exercises import NotYet, Unanswered, check, grade


class Bottleneck(nn.Module):
    """The right answer: h + up(relu(down(h))), up zero-initialised."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.down = nn.Linear(d, r)
        self.act = nn.ReLU()
        self.up = nn.Linear(r, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class RandomUp(Bottleneck):
    """Keeps nn.Linear's random initialisation of `up`."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__(d, r)
        nn.init.normal_(self.up.weight, std=0.1)


class ZeroWeightOnly(Bottleneck):
    """Zeroes up.weight but leaves up.bias at its random initialisation."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__(d, r)
        nn.init.uniform_(self.up.bias, -0.1, 0.1)


class NoResidual(Bottleneck):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class Gelu(Bottleneck):
    def __init__(self, d: int, r: int) -> None:
        super().__init__(d, r)
        self.act = nn.GELU()


class Tanh(Bottleneck):
    def __init__(self, d: int, r: int) -> None:
        super().__init__(d, r)
        self.act = nn.Tanh()


class Detached(Bottleneck):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)).detach())


class Transposed(nn.Module):
    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.down, self.act, self.up = nn.Linear(r, d), nn.ReLU(), nn.Linear(d, r)


class Template(nn.Module):
    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        raise NotImplementedError("write the constructor")


def test_right_bottleneck_passes():
    assert "identity at initialisation" in grade("1.bottleneck", Bottleneck)


def test_grading_leaves_the_global_random_state_alone():
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    grade("1.bottleneck", Bottleneck)
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize(
    "wrong, behaviour",
    [
        (RandomUp, "at initialisation your module changed its input by"),
        (ZeroWeightOnly, "at initialisation your module changed its input by"),
        (NoResidual, "the residual h + ... is missing"),
        (Gelu, "matches a GELU adapter"),
        (Tanh, "differs from a bottleneck adapter's by"),
        (Detached, "once W_up has moved, W_down still receives no gradient"),
        (Transposed, "`down` has a weight of shape"),
    ],
)
def test_bottleneck_mistakes_are_named(wrong, behaviour):
    with pytest.raises(NotYet) as failure:
        grade("1.bottleneck", wrong)
    assert behaviour in str(failure.value)


def test_bottleneck_reports_how_much_the_input_changed():
    with pytest.raises(NotYet, match=r"changed its input by \d"):
        grade("1.bottleneck", RandomUp)


def test_package_adapter_is_refused():
    with pytest.raises(NotYet, match="package's version"):
        grade("1.bottleneck", adapterlib.BottleneckAdapter)
    with pytest.raises(NotYet, match="package's own implementation"):
        grade("1.bottleneck", adapterlib.LoraLinear)


def test_unanswered_bottleneck_falls_back_to_the_package(capsys):
    with pytest.raises(Unanswered):
        grade("1.bottleneck", Template)
    assert check("1.bottleneck", Template) is adapterlib.BottleneckAdapter
    assert "Not answered yet" in capsys.readouterr().out


def test_checked_right_answer_is_returned(capsys):
    assert check("1.bottleneck", Bottleneck) is Bottleneck
    assert "[1.bottleneck] ✔ Correct" in capsys.readouterr().out


def adapter_parameters(d: int, r: int, bias: bool = True) -> int:
    return 2 * d * r + (d + r if bias else 0)


def test_right_count_passes():
    assert "right on all" in grade("1.count", adapter_parameters)


@pytest.mark.parametrize(
    "wrong, behaviour",
    [
        (lambda d, r, bias=True: 2 * d * r, "(18 with biases, 0 without)"),
        (lambda d, r, bias=True: 2 * d * r + d + r, "(0 with biases, 18 without)"),
        (lambda d, r, bias=True: 2 * d * r + (2 * d if bias else 0), "too many"),
        (lambda d, r, bias=True: d * r + (d + r if bias else 0), "too few"),
        (lambda d, r, bias=True: float(adapter_parameters(d, r, bias)), "a count is an int"),
    ],
)
def test_count_mistakes_are_named(wrong, behaviour):
    with pytest.raises(NotYet) as failure:
        grade("1.count", wrong)
    assert behaviour in str(failure.value)


def test_count_message_never_shows_the_expected_value():
    with pytest.raises(NotYet) as failure:
        grade("1.count", lambda d, r, bias=True: 2 * d * r)
    assert "d=8, r=1, bias=True" in str(failure.value)
    assert str(adapter_parameters(8, 1, True)) not in str(failure.value)


def test_package_closed_form_is_refused():
    with pytest.raises(NotYet, match="package's own implementation"):
        grade("1.count", method_parameter_count)


def test_unanswered_count_falls_back_to_the_package():
    def template(d: int, r: int, bias: bool = True) -> int:
        raise NotImplementedError("write the count")

    fallback = check("1.count", template)
    assert fallback is not template
    assert fallback(768, 64, True) == adapter_parameters(768, 64, True)
