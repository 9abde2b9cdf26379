r"""Exercises of notebook 9 (the unified view): graders and the package's versions of the answers.

* ``9.prefix_gate``: :math:`\lambda(x)`, the prefix's share of each query's attention, compared
  with :func:`adapterlib.unified.prefix_gate` on random padded batches;
* ``9.dora_delta``: DoRA's :math:`\Delta h = (W' - W)x`, compared with
  :func:`adapterlib.unified.dora_delta` at DoRA's start and after training-like changes;
* ``9.same_for_every_token``: which methods add the same :math:`\Delta h` to every token; the
  notebook then sets the answer beside the measurement (:func:`measurement_beside_answer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .. import unified
from ..methods import dora
from . import NotYet, exercise
from .contract import describe_error, nonfinite, plain_result

TOLERANCE = 1e-5
# The package's own answers: while the learner's function is graded, calling into them is refused.
REFERENCES = (unified, dora, __import__("peft").tuners.lora.dora)


def call_learner(function: Callable, inputs: tuple, described: str) -> torch.Tensor:
    """The learner's function on copies of ``inputs``; a failure is named, not solved."""
    try:
        with torch.no_grad():
            output = function(*(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs))
    except (NotImplementedError, NotYet, AssertionError):
        raise
    except Exception as error:
        raise NotYet(f"on {described} your function raised {describe_error(error)}.") from None
    plain_result(output, f"on {described}")
    wanted = "return a float tensor (float32, like the inputs)"
    if not isinstance(output, torch.Tensor):
        raise NotYet(f"your function returned a {type(output).__name__}; {wanted}.")
    if not output.is_floating_point():
        raise NotYet(f"your function returned a tensor of {output.dtype}; {wanted}.")
    if torch.finfo(output.dtype).eps > torch.finfo(torch.float32).eps:
        raise NotYet(
            f"your function returned {output.dtype}, which rounds to about "
            f"{torch.finfo(output.dtype).eps:.0e}; {wanted}."
        )
    return output


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to :data:`TOLERANCE`, compared in float32 (a float64 answer is judged by its values)."""
    return torch.allclose(a.float(), b.float(), atol=TOLERANCE)


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def require_float32(output: torch.Tensor, what: str) -> None:
    """After the values passed: the cells after the exercise compare the answer with float32 tensors."""
    if output.dtype != torch.float32:
        raise NotYet(
            f"your {what} is right, but your function returns {output.dtype}: return float32, the inputs' "
            "dtype, since the cells below compare it with the model's float32 tensors."
        )


# --------------------------------------------------------------------------- 9.prefix_gate


def gate_case(batch: int, heads: int, seq: int, d_h: int, n: int, lengths: list[int], seed: int) -> tuple:
    """Random per-head queries and keys, a prefix's keys and a padded 1/0 mask."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, heads, seq, d_h, generator=generator)
    key = torch.randn(batch, heads, seq, d_h, generator=generator)
    prefix_key = torch.randn(heads, n, d_h, generator=generator)
    mask = torch.zeros(batch, seq, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return query, key, prefix_key, mask


GATE_CASES = [
    dict(batch=2, heads=4, seq=6, d_h=8, n=3, lengths=[6, 3], seed=0),
    dict(batch=3, heads=2, seq=5, d_h=16, n=1, lengths=[2, 5, 4], seed=1),
    dict(batch=1, heads=3, seq=4, d_h=4, n=6, lengths=[4], seed=2),
]


def gate_with_scale(query, key, prefix_key, mask, divisor: float) -> torch.Tensor:
    """The prefix's share with the scores divided by ``divisor`` instead of sqrt(d_h) (to name that mistake)."""
    rescale = math.sqrt(query.shape[-1]) / divisor
    return unified.prefix_gate(query * rescale, key, prefix_key, mask)


def without_padding(inputs: tuple, row: int) -> tuple:
    """Sentence ``row`` of a gate case alone, its padded positions cut off."""
    query, key, prefix_key, mask = inputs
    length = int(mask[row].sum())
    return (
        query[row : row + 1, :, :length],
        key[row : row + 1, :, :length],
        prefix_key,
        mask[row : row + 1, :length],
    )


def diagnose_gate(
    function: Callable, inputs: tuple, output: torch.Tensor, expected: torch.Tensor, described: str
) -> str:
    """Name the behaviour in which the learner's gate differs from the prefix's share of attention."""
    query, key, prefix_key, mask = inputs
    broken = nonfinite(output)
    if broken:
        return (
            f"on {described} your λ has {broken}. exp of -inf scores summed to 0 and divided by 0 gives NaN: "
            "that happens when every score in a sum is masked. The mask is 1 for real tokens and 0 for padding; "
            "set the scores to -inf where mask == 0 (not where it is 1), so each query keeps its real tokens."
        )
    low, high = output.min().item(), output.max().item()
    if low < -TOLERANCE or high > 1 + TOLERANCE:
        return (
            f"on {described} your values range from {low:.3g} to {high:.3g}; a share of attention lies between "
            "0 and 1."
        )
    if close(output, torch.ones_like(output)):
        return (
            "your λ is 1 for every query, however poorly the prefix keys match it: the denominator must hold "
            "the scores of the real tokens as well as those of the prefix."
        )
    if not mask.all():
        moved = key.masked_fill(~mask.bool()[:, None, :, None], 10.0)
        change = largest_difference(
            call_learner(function, (query, moved, prefix_key, mask), described), output
        )
        if change > TOLERANCE:
            return (
                f"changing the keys of padded positions changed your λ by up to {change:.3g}: padding takes no "
                "attention, so its scores must not enter the sums."
            )
        row = int((~mask.bool()).any(dim=1).nonzero()[0])
        alone = call_learner(function, without_padding(inputs, row), described)
        real = output[row : row + 1, :, : int(mask[row].sum())]
        if alone.shape == real.shape and largest_difference(alone, real) > TOLERANCE:
            zero_scores = unified.prefix_gate(
                query, key * mask[:, None, :, None], prefix_key, torch.ones_like(mask)
            )
            why = (
                " Your padded keys score 0, as if the scores were multiplied by the mask, and exp(0) = 1 weighs "
                "like a real token's: set them to -inf (masked_fill) instead."
                if close(output, zero_scores)
                else ""
            )
            return (
                f"cutting the padded positions off sentence {row} changed your λ for its real tokens by up to "
                f"{largest_difference(alone, real):.3g}: padding must not count at all.{why}"
            )
    if close(output, 1 - expected):
        return (
            "your values are the share of attention that goes to the real tokens (they fall as the prefix keys "
            "match the queries better); λ is the prefix's share."
        )
    d_h, heads = query.shape[-1], query.shape[1]
    for divisor, says in (
        (math.sqrt(heads * d_h), "sqrt(heads * d_h), the model's width"),
        (1.0, "nothing (no scaling)"),
        (float(d_h), "d_h instead of its square root"),
    ):
        if close(output, gate_with_scale(query, key, prefix_key, mask, divisor)):
            return (
                f"your scores are divided by {says}; "
                "a head scales its scores by the square root of its own width d_h."
            )
    changed = largest_difference(
        call_learner(function, (2 * query, key, prefix_key, mask), described), output
    )
    if changed <= TOLERANCE:
        return (
            "your λ stayed the same when the queries doubled: λ(x) depends on how well each query matches the "
            "prefix keys compared with the token keys."
        )
    difference = largest_difference(output, expected)
    return f"on {described} your λ differs from the prefix's share of attention by up to {difference:.3g}."


@exercise("9.prefix_gate", kind="function", reference=lambda: unified.prefix_gate, forbidden=REFERENCES)
def grade_prefix_gate(function: Callable) -> str:
    for shape in GATE_CASES:
        inputs = gate_case(**shape)
        query, _, prefix_key, _ = inputs
        batch, heads, seq, d_h = query.shape
        described = f"batch={batch}, heads={heads}, seq={seq}, d_h={d_h}, n={prefix_key.shape[1]}"
        output = call_learner(function, inputs, described)
        if output.shape != (batch, heads, seq, 1):
            if output.shape == (batch, heads, seq):
                raise NotYet(
                    "your λ has shape [batch, H, T]; keep the summed axis (keepdim=True), [batch, H, T, 1], "
                    "so that it multiplies the heads' outputs [batch, H, T, d_h]."
                )
            raise NotYet(
                f"on {described} your λ has shape {tuple(output.shape)}; it should have one number per "
                f"query and head, [batch, H, T, 1] = {(batch, heads, seq, 1)}."
            )
        expected = unified.prefix_gate(*inputs)
        if not close(output, expected):
            raise NotYet(diagnose_gate(function, inputs, output, expected, described))
    large = tuple(x * 30 if i < 3 else x for i, x in enumerate(gate_case(**GATE_CASES[0])))
    output = call_learner(function, large, "scores around ±1000")
    if not torch.isfinite(output).all():
        raise NotYet(
            "with scores around ±1000 your λ is not finite (exp overflowed); subtract each row's largest "
            "score before exponentiating, or use logsumexp or softmax."
        )
    require_float32(output, "λ")
    return (
        f"the prefix's share of attention on {len(GATE_CASES)} random padded batches (1 to 6 prefix vectors), "
        "and finite for scores around ±1000."
    )


# --------------------------------------------------------------------------- 9.dora_delta


def dora_case(batch: int, seq: int, k: int, d: int, r: int, scaling: float, seed: int) -> dict[str, Any]:
    """A frozen weight W (d x k), LoRA's A and B, DoRA's magnitude m and an input x, as after some training."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, k, generator=generator) / math.sqrt(k)
    A = torch.randn(r, k, generator=generator) / math.sqrt(k)
    B = torch.randn(d, r, generator=generator) * 0.3
    magnitude = torch.linalg.vector_norm(weight, dim=1) * (1 + 0.3 * torch.randn(d, generator=generator))
    x = torch.randn(batch, seq, k, generator=generator)
    return dict(x=x, weight=weight, A=A, B=B, magnitude=magnitude, scaling=scaling)


DORA_CASES = [
    dict(batch=1, seq=4, k=8, d=8, r=4, scaling=0.5, seed=1),
    dict(batch=2, seq=3, k=6, d=5, r=2, scaling=2.0, seed=0),
    dict(batch=3, seq=2, k=4, d=7, r=1, scaling=1.0, seed=2),
]
DORA_ARGUMENTS = ("x", "weight", "A", "B", "magnitude", "scaling")


def dora_inputs(case: dict[str, Any], **changes: Any) -> tuple:
    values = {**case, **changes}
    return tuple(values[name] for name in DORA_ARGUMENTS)


def dora_start(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    """DoRA's starting point: B = 0 and m the length of each row of W, where Delta h = 0."""
    return dict(B=torch.zeros_like(case["B"]), magnitude=torch.linalg.vector_norm(case["weight"], dim=1))


def unit_gain(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    """m equal to the row lengths of W + s B A: DoRA's Delta h is then LoRA's s B A x."""
    direction = case["weight"] + case["scaling"] * case["B"] @ case["A"]
    return dict(magnitude=torch.linalg.vector_norm(direction, dim=1))


def diagnose_dora(function: Callable, case: dict[str, Any], described: str) -> str:
    """Name the behaviour in which the learner's Delta h differs from DoRA's."""
    x, weight, A, B, scaling = (case[name] for name in ("x", "weight", "A", "B", "scaling"))
    output = call_learner(function, dora_inputs(case), described)
    broken = nonfinite(output)
    if broken:
        return (
            f"on {described} your Δh has {broken}: look for a division by a norm that is 0 (the norm of a "
            "whole matrix or of the wrong axis) or by a magnitude; each row of W + s B A has its own norm, "
            "which is not 0 here."
        )
    if (
        weight.shape[0] == weight.shape[1]
    ):  # only a square W lets a [d] vector scale its columns without an error
        direction = weight + scaling * B @ A
        norms = torch.linalg.vector_norm(direction, dim=1)
        for by_columns in (
            direction * (case["magnitude"] / norms),
            direction / norms[:, None] * case["magnitude"],
        ):
            if close(output, x @ (by_columns - weight).T):
                return (
                    "your W' scales the columns of W + s B A: a [d] vector times a [d, k] matrix lines up with "
                    "its last axis, the k inputs. m and the norm belong to output feature i, which is row i of W "
                    "(as in nn.Linear): give the [d] vector a second axis, [:, None], to scale rows."
                )
    at_start = call_learner(function, dora_inputs(case, **dora_start(case)), described)
    if at_start.abs().max().item() > TOLERANCE:
        if close(at_start, x @ weight.T):
            return (
                "at DoRA's start (B = 0, m = the length of each row of W) your function returns W x, the layer's "
                "output; Δh is the change the adapter makes to it."
            )
        return (
            f"at DoRA's start (B = 0, m = the length of each row of W) your Δh reaches "
            f"{at_start.abs().max().item():.3g} instead of 0, so the adapted layer would not start where the base "
            "layer is: each output feature (a row of W) has its own magnitude and its own norm."
        )
    if close(call_learner(function, dora_inputs(case, scaling=2 * scaling), described), output):
        return (
            "your Δh did not change when `scaling` doubled: s multiplies B A inside the direction W + s B A."
        )
    doubled_m = call_learner(function, dora_inputs(case, magnitude=2 * case["magnitude"]), described)
    if close(doubled_m, output):
        return "your Δh did not change when the magnitudes m doubled: m sets the length of each row of W'."
    at_unit = call_learner(function, dora_inputs(case, **unit_gain(case)), described)
    lora = unified.lora_delta(x, A, B, scaling)
    if not close(at_unit, lora):
        return (
            f"when each m equals the row length of W + s B A, so that DoRA leaves that direction's length alone, "
            f"your Δh differs from LoRA's s B A x by up to {largest_difference(at_unit, lora):.3g}: the norm is "
            "taken of the updated weight W + s B A, row by row."
        )
    expected = unified.dora_delta(*dora_inputs(case))
    return f"on {described} your Δh differs from DoRA's by up to {largest_difference(output, expected):.3g}."


@exercise("9.dora_delta", kind="function", reference=lambda: unified.dora_delta, forbidden=REFERENCES)
def grade_dora_delta(function: Callable) -> str:
    for sizes in DORA_CASES:
        case = dora_case(**sizes)
        described = (
            f"x {tuple(case['x'].shape)}, W {tuple(case['weight'].shape)}, r={sizes['r']}, "
            f"scaling={sizes['scaling']:g}"
        )
        shape = (*case["x"].shape[:-1], sizes["d"])
        for changes in ({}, dora_start(case), unit_gain(case)):
            output = call_learner(function, dora_inputs(case, **changes), described)
            if output.shape != shape:
                raise NotYet(
                    f"on {described} your Δh has shape {tuple(output.shape)}; it should have one change "
                    f"per token and output feature, {shape}."
                )
            if not close(output, unified.dora_delta(*dora_inputs(case, **changes))):
                raise NotYet(diagnose_dora(function, case, described))
    require_float32(output, "Δh")
    return (
        f"DoRA's (W' - W) x on {len(DORA_CASES)} random layers (square and not), zero at DoRA's start, "
        "LoRA's update when m keeps each row's length."
    )


# --------------------------------------------------------------------------- 9.same_for_every_token

SAME_FOR_EVERY_TOKEN = {"bitfit"}
METHOD_NAMES = ("adapter", "lora", "prefix", "parallel", "ia3", "bitfit", "dora")


def method_names(answer: Any) -> set[str]:
    """The learner's answer as a set of known method names."""
    if isinstance(answer, str):
        answer = {answer}
    if not isinstance(answer, (set, frozenset, list, tuple)) or not all(
        isinstance(name, str) for name in answer
    ):
        raise NotYet(f"expected a set of method names such as {{'lora', 'ia3'}}, got {answer!r}.")
    names = {name.strip().lower() for name in answer}
    unknown = sorted(names - set(METHOD_NAMES))
    if unknown:
        raise NotYet(f"{', '.join(map(repr, unknown))} is not one of the methods: {', '.join(METHOD_NAMES)}.")
    return names


@exercise("9.same_for_every_token", kind="choice")
def grade_same_for_every_token(answer: Any) -> str:
    names = method_names(answer)
    wrong, missing = len(names - SAME_FOR_EVERY_TOKEN), len(SAME_FOR_EVERY_TOKEN - names)
    if wrong or missing:
        problems = []
        if wrong:
            chosen = (
                "the one method you chose"
                if len(names) == 1
                else f"{wrong} of the {len(names)} methods you chose"
            )
            problems.append(f"{chosen} {'gives' if wrong == 1 else 'give'} each token its own Δh")
        if missing:
            problems.append(
                f"your answer leaves out {missing} method{'s' if missing > 1 else ''} whose Δh is the same "
                "for every token"
            )
        raise NotYet(
            "; ".join(problems) + ". Ask of each row of the table what its Δh reads: a change computed "
            "from a token's own x or h differs from token to token."
        )
    return (
        "BitFit's Δh = Δb reads nothing, so every token gets the same change; every other row reads x or h."
    )


def measurement_beside_answer(answer: Any, spread: dict[str, float], threshold: float = 1e-6) -> set[str]:
    """Print which methods the measurement finds the same for every token, beside the learner's answer,
    and return them.

    ``spread``: for each row, the largest difference between two real tokens' Δh
    (:func:`adapterlib.unified.token_spread`), keyed by labels that start with the method's name
    (``"ia3 keys"``). Raises AssertionError when the measurement disagrees with the grader's answer."""
    measured = {row.split()[0] for row, value in spread.items() if value <= threshold}
    rows = {row.split()[0] for row in spread}
    if measured != SAME_FOR_EVERY_TOKEN or rows != set(METHOD_NAMES):
        raise AssertionError(
            f"the measurement finds {sorted(measured)} the same for every token, out of "
            f"{sorted(rows)}; the grader expects {sorted(SAME_FOR_EVERY_TOKEN)} out of all seven."
        )
    if answer is Ellipsis:  # nothing of the measurement before an answer: Run All spoils nothing
        print(
            "Write your answer in place of the ... above and run that cell first; the measurement shows after."
        )
        return measured
    print(f"Measured: the same Δh for every token: {', '.join(sorted(measured))}.")
    try:
        differ = sorted(method_names(answer) ^ measured)
    except NotYet as problem:
        print(f"Your answer cannot be compared: {problem}")
        return measured
    print(
        "Your answer agrees."
        if not differ
        else f"Your answer and the measurement differ on: {', '.join(differ)}."
    )
    return measured
