r"""Exercises of notebook 8 (how much rank does SST-2 need?), graded on matrices built here.

* ``8.energy``: ``energy_share(singular_values, r)``, the share of :math:`\|\Delta W\|_F^2 = \sum_i \sigma_i^2`
  that the top :math:`r` singular values carry, :math:`\sum_{i \le r} \sigma_i^2 / \sum_i \sigma_i^2`.
* ``8.truncate``: ``truncate(delta, r)``, the best rank-:math:`r` approximation
  :math:`\sum_{i \le r} \sigma_i u_i v_i^\top` (Eckart-Young), with ``torch.linalg.svd``.
* ``8.similarity``: ``subspace_similarity(U1, U2, i, j)``, Hu et al.'s
  :math:`\varphi = \|U_1[:, :i]^\top U_2[:, :j]\|_F^2 / \min(i, j)` for matrices with orthonormal columns.

While the learner's function is graded, a call into the package's own answers (every function of
:mod:`adapterlib.low_rank`, and :func:`energy_share`, which ``check`` hands back while the exercise is
unanswered) is refused, however it was reached: the exercise is to write them with torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .. import low_rank
from ..low_rank import energy_shares, subspace_similarity, truncate
from . import NotYet, exercise
from .contract import describe_error, plain_result

TOLERANCE = 1e-4


def energy_share(singular_values: torch.Tensor, r: int) -> float:
    r"""The share of :math:`\sum_i \sigma_i^2` carried by the first ``r`` (largest) singular values."""
    return energy_shares(torch.as_tensor(singular_values))[r].item()


REFUSED = (low_rank, energy_share)  # the package's answers: its low-rank module and the fallback of 8.energy


def run(answer: Callable, *args, what: str):
    """Call the learner's function; an error it raises becomes a NotYet naming the case."""
    try:
        result = answer(*args)
    except (NotImplementedError, NotYet, AssertionError):
        raise
    except Exception as error:  # the learner's code failed: say where, not how to fix it
        raise NotYet(f"{what}: your function raised {describe_error(error)}") from None
    return plain_result(result, what)


def as_number(value, what: str) -> float:
    """A number the learner returned, strictly: a tensor or an array is sent back (``.item()``, ``float()``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (float, int, np.floating, np.integer)):
        hint = " (a one-element tensor: call .item() on it)" if isinstance(value, torch.Tensor) else ""
        raise NotYet(
            f"{what}: your function returned {type(value).__name__} {value!r}{hint}, not a number: "
            "return a Python float."
        )
    return float(value)


def close(values: list[float], targets: list[float]) -> bool:
    return all(abs(v - t) <= TOLERANCE for v, t in zip(values, targets))


# ---------------------------------------------------------------- 8.energy


ENERGY_SPECTRA = ([3.0, 1.0], [4.0, 2.0, 2.0, 1.0], torch.linspace(2.0, 0.1, 12).tolist())


def learner_shares(answer: Callable, s: torch.Tensor) -> list[float]:
    """The learner's share at every r from 0 to full; the singular values must come back unchanged."""
    shares = []
    for r in range(len(s) + 1):
        where = f"at r = {r} for singular values {s.tolist()}"
        given = s.clone()
        shares.append(as_number(run(answer, given, r, what=where), where))
        if not torch.equal(given, s):
            raise NotYet(
                f"{where} your function changed the singular values it was given (an in-place operation "
                "such as pow_ or sort_); compute on a copy and leave them as they were: the caller uses "
                "the same tensor again, for the next r."
            )
    return shares


def energy_mistakes(s: torch.Tensor) -> dict[str, list[float]]:
    """The shares at r = 0..n that typical slips give, under the message that names each."""
    shares = energy_shares(s).tolist()
    plain = torch.cat([s.new_zeros(1), s.cumsum(0)]) / s.sum()
    smallest = energy_shares(s.flip(0)).tolist()
    return {
        "your shares run up to 100: E(r) is a fraction from 0 to 1 (the notebook turns it into a percentage when it "
        "prints it), not a percentage.": [100 * x for x in shares],
        "your share falls as r grows: it is the share of the singular values after the first r, the energy that "
        "rank r leaves out. E(r) is the share the first r keep.": [1 - x for x in shares],
        "your shares are right at every r except r = 0, where yours is 1: an index r - 1 is -1 at r = 0, and Python "
        "reads -1 as the last entry, the whole sum. Slice the first r values instead (empty at r = 0).": [1.0]
        + shares[1:],
        "at every r your share is the one of r + 1 singular values: "
        "you are keeping one singular value too many.": shares[1:] + [1.0],
        "at every r your share is the one of r - 1 singular values: you are keeping one singular value too few "
        "(the first r are those at indices 0 to r - 1).": [0.0] + shares[:-1],
        "your shares are those of the sum of the singular values; the energy ||Delta W||_F^2 is the sum of "
        "their squares.": plain.tolist(),
        "your shares are a ratio of Frobenius norms; the energy is the squared norm, so leave out the square "
        "roots.": [x**0.5 for x in shares],
        "your shares are those of the r smallest singular values; they are sorted largest first, so the top r "
        "are the first r.": smallest,
    }


def diagnose_energy(s: torch.Tensor, shares: list[float]) -> str:
    """Name the behaviour in which the learner's shares differ from E(r)."""
    for message, slip in energy_mistakes(s).items():
        if close(shares, slip):
            return message
    if abs(shares[0]) > TOLERANCE:
        return f"with r = 0 (no singular value kept) your share is {shares[0]:.3g}; keeping nothing keeps no energy."
    if abs(shares[-1] - 1) > TOLERANCE:
        return (
            f"with every singular value kept (r = {len(s)}) your share is {shares[-1]:.3g}; the whole matrix "
            "carries all of its own energy."
        )
    expected = energy_shares(s).tolist()
    r = next(r for r, (share, e) in enumerate(zip(shares, expected)) if abs(share - e) > TOLERANCE)
    return (
        f"at r = {r} your share is {shares[r]:.4g}, which is not the share of sum sigma_i^2 carried by the first "
        "r of them."
    )


@exercise("8.energy", kind="function", reference=lambda: energy_share, forbidden=REFUSED)
def grade_energy(answer: Callable[[torch.Tensor, int], float]) -> str:
    """Shares of sum sigma^2: 0 at r = 0, 1 at full rank, right in between, on several spectra; the
    singular values left as they were."""
    for values in ENERGY_SPECTRA:
        s = torch.tensor(values)
        shares = learner_shares(answer, s)
        if not close(shares, energy_shares(s).tolist()):
            raise NotYet(f"for singular values {s.tolist()}: {diagnose_energy(s, shares)}")
    return (
        f"on {len(ENERGY_SPECTRA)} spectra your shares are 0 at r = 0, 1 at full rank, and the share of sum "
        "sigma^2 carried by the top r in between; the singular values are left as they were."
    )


# ---------------------------------------------------------------- 8.truncate


def spectrum_matrix(rows: int, columns: int, singular_values: list[float], seed: int) -> torch.Tensor:
    """A ``rows x columns`` matrix with exactly these singular values and random singular vectors."""
    generator = torch.Generator().manual_seed(seed)
    n = len(singular_values)
    u, _ = torch.linalg.qr(torch.randn(rows, n, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(columns, n, generator=generator, dtype=torch.float64))
    return (u * torch.tensor(singular_values, dtype=torch.float64)) @ v.T


TRUNCATION_CASES = [  # (rows, columns, singular values): tall, wide, square
    (12, 7, [5.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25]),
    (6, 10, [4.0, 2.5, 2.0, 0.75, 0.5, 0.1]),
    (9, 9, [3.0, 2.9, 1.0, 0.9, 0.8, 0.3, 0.2, 0.1, 0.05]),
]


def truncation_mistakes(delta: torch.Tensor, r: int) -> dict[str, torch.Tensor]:
    """What typical slips return at rank ``r``, under the message that names each (only the slips
    that differ from the right answer at this ``r``)."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    n = len(s)
    mistakes = {}
    if r < n:
        mistakes[
            "your result keeps r + 1 directions, one too many (the first r are those at indices 0 to r - 1)."
        ] = truncate(delta, r + 1)
    if r > 0:
        mistakes[
            "your result keeps r - 1 directions, one too few (the first r are those at indices 0 to r - 1)."
        ] = truncate(delta, r - 1)
        mistakes["your directions u_i v_i^T are weighted by sigma_i^2; each term is sigma_i u_i v_i^T."] = (
            u[:, :r] * s[:r] ** 2
        ) @ vh[:r]
    if 0 < r < n:
        mistakes[
            "your result keeps the directions of the r smallest singular values; they are sorted largest "
            "first, so the top r are the first r."
        ] = (u[:, n - r :] * s[n - r :]) @ vh[n - r :]
        mistakes[
            "your result is everything except the first r terms: the part a truncation discards, not the "
            "part it keeps."
        ] = delta - truncate(delta, r)
    return mistakes


def grade_one_truncation(answer: Callable, delta: torch.Tensor, r: int) -> float:
    """Check one call; return how far the result is from the best rank-r approximation."""
    where = f"on a {delta.shape[0]} x {delta.shape[1]} matrix with r = {r}"
    original = delta.clone()
    result = run(answer, delta, r, what=where)
    if not torch.equal(delta, original):
        raise NotYet(
            f"{where} your function changed the matrix it was given; return a new matrix and leave "
            "the update itself as it was."
        )
    if not isinstance(result, torch.Tensor):
        raise NotYet(f"{where} your function returned {type(result).__name__}; return a torch tensor.")
    if tuple(result.shape) != tuple(delta.shape):
        raise NotYet(
            f"{where} your result has shape {tuple(result.shape)}; a truncated update has the "
            "shape of the update."
        )
    if not result.is_floating_point():
        raise NotYet(f"{where} your result is a tensor of {result.dtype}; return floats, in delta's dtype.")
    if result.dtype != delta.dtype:
        rounding = (
            f", which rounds every entry to about {torch.finfo(result.dtype).eps:.0e} of its size (the rounding "
            "alone gives the matrix full rank)"
            if torch.finfo(result.dtype).eps > torch.finfo(delta.dtype).eps
            else f" where delta is {delta.dtype}"
        )
        raise NotYet(
            f"{where} your result is {result.dtype}{rounding}; return it in delta's dtype "
            "(torch.zeros_like(delta), or dtype=delta.dtype)."
        )
    result = result.double()
    scale = delta.norm().item()
    best = truncate(delta, r)
    rank = int((torch.linalg.svdvals(result) > 1e-6 * scale).sum())
    error, best_error = (delta - result).norm().item(), (delta - best).norm().item()
    if rank <= r and error <= best_error + TOLERANCE * scale:
        return (result - best).abs().max().item()
    for message, slip in truncation_mistakes(delta, r).items():
        if (result - slip).abs().max().item() <= TOLERANCE * scale:
            raise NotYet(f"{where} {message}")
    if rank > r:
        raise NotYet(f"{where} your result has rank {rank}: keep only the first r terms sigma_i u_i v_i^T.")
    found = torch.linalg.svdvals(result)[:r]
    wanted = torch.linalg.svdvals(delta)[:r]
    if rank == r and r and (found - 1).abs().max() < 1e-6 and (wanted - 1).abs().max() > 0.1:
        raise NotYet(
            f"{where} every singular value of your result is 1: the kept directions u_i v_i^T must be "
            "weighted by their singular values sigma_i."
        )
    raise NotYet(
        f"{where} your result leaves an error ||Delta W - yours||_F of {error:.4g}, more than the "
        f"best rank-{r} matrix leaves: keep the directions of the largest singular values, each with its "
        "own u_i, sigma_i and v_i (check which index of U and of V^T runs over the directions)."
    )


@exercise("8.truncate", kind="function", reference=lambda: truncate, forbidden=REFUSED)
def grade_truncate(answer: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Rank-r truncations of tall, wide and square matrices: the rank asked for, the error of the best
    approximation (Eckart-Young), zero at r = 0, the matrix itself at full rank; the input untouched."""
    largest = 0.0
    for seed, (rows, columns, values) in enumerate(TRUNCATION_CASES):
        delta = spectrum_matrix(rows, columns, values, seed)
        for r in range(len(values) + 1):
            largest = max(largest, grade_one_truncation(answer, delta, r))
    return (
        f"on tall, wide and square matrices, at every rank from 0 to full, your truncation has the rank asked "
        f"for and is the best rank-r approximation (largest difference {largest:.1e}); the input is untouched."
    )


# ---------------------------------------------------------------- 8.similarity


def orthonormal(rows: int, columns: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(rows, columns, generator=generator, dtype=torch.float64))[0]


def similarity_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int, int]]:
    """(description, U1, U2, i, j) on R^20, with what each case is about in the description."""
    n = 20
    basis = orthonormal(n, n, 0)
    rotation = orthonormal(5, 5, 1)
    nested = torch.cat([basis[:, :5] @ rotation, basis[:, 10:15]], dim=1)  # the same top-5 span, turned
    return [
        ("a 4-dimensional subspace compared with itself", basis, basis, 4, 4),
        (
            "the top 3 directions against the top 5 of the same basis (the first span inside the second)",
            basis,
            basis,
            3,
            5,
        ),
        ("two random subspaces (i = 2, j = 6)", orthonormal(n, 8, 2), orthonormal(n, 8, 3), 2, 6),
        ("two random subspaces (i = 6, j = 3)", orthonormal(n, 8, 4), orthonormal(n, 8, 5), 6, 3),
        ("two orthogonal subspaces (directions 1-4 against 5-8)", basis, basis[:, 4:], 4, 4),
        (
            "a 5-dimensional subspace against another basis of it, plus 5 more directions (i = 5, j = 10)",
            basis,
            nested,
            5,
            10,
        ),
    ]


def similarity_mistakes(u1: torch.Tensor, u2: torch.Tensor, i: int, j: int) -> dict[str, float]:
    """What typical slips compute, each under the message that names it."""

    def overlap(a: int, b: int) -> float:
        return (u1[:, :a].T @ u2[:, :b]).pow(2).sum().item()

    size = min(i, j)
    mistakes = {
        "your value is the Frobenius norm itself, not its square.": overlap(i, j) ** 0.5 / size,
        "your value is not divided by min(i, j), so it grows with the dimensions compared.": overlap(i, j),
        "your value is divided by the larger of i and j; a small span inside a large one then scores below 1.": overlap(
            i, j
        )
        / max(i, j),
        "your value is divided by i * j, the number of entries of U1[:, :i]^T U2[:, :j]; the squared cosines of one "
        "direction with an orthonormal basis add up to at most 1, so the sum is at most min(i, j), the number of "
        "directions of the smaller subspace: divide by that.": overlap(i, j) / (i * j),
        "your value is divided by sqrt(i * j); the sum of squared cosines is at most min(i, j), the number of "
        "directions of the smaller subspace: divide by that.": overlap(i, j) / (i * j) ** 0.5,
        "your value sums the absolute values of the cosines; phi sums their squares.": (
            u1[:, :i].T @ u2[:, :j]
        )
        .abs()
        .sum()
        .item()
        / size,
    }
    if i + 1 <= u1.shape[1] and j + 1 <= u2.shape[1]:
        mistakes[
            "you took i + 1 columns of U1 and j + 1 of U2; the top i directions are the columns at indices "
            "0 to i - 1, U[:, :i]."
        ] = overlap(i + 1, j + 1) / size
    if i > 1 and j > 1:
        mistakes[
            "you took i - 1 columns of U1 and j - 1 of U2, one too few of each; the top i directions are "
            "U[:, :i]."
        ] = overlap(i - 1, j - 1) / size
    if j <= u1.shape[1] and i <= u2.shape[1]:
        mistakes[
            "you took the first j columns of U1 and the first i of U2; i counts the directions of U1, j those "
            "of U2."
        ] = overlap(j, i) / size
    if i <= u1.shape[0] and j <= u2.shape[0] and u1.shape[1] == u2.shape[1]:
        rows = (u1[:i] @ u2[:j].T).pow(2).sum().item() / size
        mistakes["you compared the first rows; the directions are the columns, U[:, :i]."] = rows
    return mistakes


@exercise("8.similarity", kind="function", reference=lambda: subspace_similarity, forbidden=REFUSED)
def grade_similarity(answer: Callable[[torch.Tensor, torch.Tensor, int, int], float]) -> str:
    """Hu et al.'s phi on bases built here: 1 for a subspace with itself and for a span inside
    another, 0 for orthogonal ones, the formula's value for random ones (either order of i, j)."""
    cases = similarity_cases()
    for description, u1, u2, i, j in cases:
        what = f"for {description}"
        value = as_number(run(answer, u1.clone(), u2.clone(), i, j, what=what), what)
        expected = subspace_similarity(u1, u2, i, j)
        if abs(value - expected) <= TOLERANCE:
            continue
        for message, slip in similarity_mistakes(u1, u2, i, j).items():
            if abs(value - slip) <= TOLERANCE:
                raise NotYet(f"{what} your similarity is {value:.4g}: {message}")
        if value > 1 + TOLERANCE:
            raise NotYet(
                f"{what} your similarity is {value:.4g}, above 1, which phi cannot be: each of the min(i, j) "
                "directions of the smaller subspace has a projection onto the other of squared length at "
                "most 1, so the sum of squared cosines is at most min(i, j)."
            )
        if expected > 1 - TOLERANCE:
            raise NotYet(
                f"{what} your similarity is {value:.4g}; a subspace inside the other (or equal to it) "
                "shares every one of its directions, so phi should be as large as it can be."
            )
        if expected < TOLERANCE:
            raise NotYet(f"{what} your similarity is {value:.4g}; orthogonal subspaces share no direction.")
        raise NotYet(
            f"{what} your similarity is {value:.4g}, which is not ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j)."
        )
    return (
        f"on {len(cases)} pairs of subspaces of R^20 your phi is 1 for a subspace with itself and for one inside "
        "another, 0 for orthogonal ones, and Hu et al.'s value for random ones, whichever of i and j is larger."
    )
