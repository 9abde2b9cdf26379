r"""Exercises of notebook 8 (how much rank does SST-2 need?), graded on matrices built here.

* ``8.energy``: ``energy_share(singular_values, r)``, the share of :math:`\|\Delta W\|_F^2 = \sum_i \sigma_i^2`
  that the top :math:`r` singular values carry, :math:`\sum_{i \le r} \sigma_i^2 / \sum_i \sigma_i^2`.
* ``8.truncate``: ``truncate(delta, r)``, the best rank-:math:`r` approximation
  :math:`\sum_{i \le r} \sigma_i u_i v_i^\top` (Eckart-Young), with ``torch.linalg.svd``.
* ``8.similarity``: ``subspace_similarity(U1, U2, i, j)``, Hu et al.'s
  :math:`\varphi = \|U_1[:, :i]^\top U_2[:, :j]\|_F^2 / \min(i, j)` for matrices with orthonormal columns.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..low_rank import energy_shares, subspace_similarity, truncate
from . import NotYet, exercise

TOLERANCE = 1e-4


def energy_share(singular_values: torch.Tensor, r: int) -> float:
    r"""The share of :math:`\sum_i \sigma_i^2` carried by the first ``r`` (largest) singular values."""
    return energy_shares(torch.as_tensor(singular_values))[r].item()


def run(answer: Callable, *args, what: str):
    """Call the learner's function; an error it raises becomes a NotYet naming the case."""
    try:
        return answer(*args)
    except NotImplementedError:
        raise
    except Exception as error:  # the learner's code failed: say where, not how to fix it
        raise NotYet(f"{what}: your function raised {type(error).__name__}: {error}") from None


def as_number(value, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise NotYet(f"{what}: your function returned {type(value).__name__}, not a number.") from None


# ---------------------------------------------------------------- 8.energy


@exercise("8.energy", reference=lambda: energy_share)
def grade_energy(answer: Callable[[torch.Tensor, int], float]) -> str:
    """Shares of sum sigma^2: 0 at r = 0, 1 at full rank, right in between, on several spectra."""
    if answer is energy_share:
        raise NotYet("that is the package's own implementation; write your own code for this exercise.")
    spectra = [torch.tensor([3.0, 1.0]), torch.tensor([4.0, 2.0, 2.0, 1.0]), torch.linspace(2.0, 0.1, 12)]
    for s in spectra:
        shares = [as_number(run(answer, s.clone(), r, what=f"at r = {r} for singular values {s.tolist()}"),
                            f"at r = {r}") for r in range(len(s) + 1)]
        if abs(shares[0]) > TOLERANCE:
            raise NotYet(f"with r = 0 (no singular value kept) your share is {shares[0]:.3g}; keeping nothing keeps "
                         "no energy. Are you keeping one singular value too many?")
        if abs(shares[-1] - 1) > TOLERANCE:
            raise NotYet(f"with every singular value kept (r = {len(s)}) your share is {shares[-1]:.3g}; the whole "
                         "matrix carries all of its own energy.")
        for r, share in enumerate(shares):
            expected = energy_share(s, r)
            if abs(share - expected) <= TOLERANCE:
                continue
            kept, total = s[:r], s
            if abs(share - (kept.sum() / total.sum()).item()) <= TOLERANCE:
                raise NotYet(f"for singular values {s.tolist()} and r = {r} your share is {share:.4g}, the share of "
                             "the sum of the singular values; the energy ||Delta W||_F^2 is the sum of their squares.")
            if abs(share - (kept.pow(2).sum().sqrt() / total.pow(2).sum().sqrt()).item()) <= TOLERANCE:
                raise NotYet(f"for singular values {s.tolist()} and r = {r} your share is {share:.4g}, a ratio of "
                             "Frobenius norms; the energy is the squared norm, so leave out the square roots.")
            raise NotYet(f"for singular values {s.tolist()} and r = {r} your share is {share:.4g}, which is not "
                         "the share of sum sigma_i^2 carried by the first r of them.")
    return (f"on {len(spectra)} spectra your shares are 0 at r = 0, 1 at full rank, and the share of sum sigma^2 "
            "carried by the top r in between.")


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


def grade_one_truncation(answer: Callable, delta: torch.Tensor, r: int) -> float:
    """Check one call; return how far the result is from the best rank-r approximation."""
    where = f"on a {delta.shape[0]} x {delta.shape[1]} matrix with r = {r}"
    original = delta.clone()
    result = run(answer, delta, r, what=where)
    if not torch.equal(delta, original):
        raise NotYet(f"{where} your function changed the matrix it was given; return a new matrix and leave "
                     "the update itself as it was.")
    if not isinstance(result, torch.Tensor):
        raise NotYet(f"{where} your function returned {type(result).__name__}; return a torch tensor.")
    if tuple(result.shape) != tuple(delta.shape):
        raise NotYet(f"{where} your result has shape {tuple(result.shape)}; a truncated update has the "
                     "shape of the update.")
    result = result.double()
    scale = delta.norm().item()
    found = torch.linalg.svdvals(result)
    rank = int((found > 1e-6 * scale).sum())
    if rank > r:
        raise NotYet(f"{where} your result has rank {rank}: keep only the first r terms sigma_i u_i v_i^T.")
    wanted = torch.linalg.svdvals(delta)[:r]
    if rank == r and r and (found[:r] - 1).abs().max() < 1e-6 and (wanted - 1).abs().max() > 0.1:
        raise NotYet(f"{where} every singular value of your result is 1: the kept directions u_i v_i^T must be "
                     "weighted by their singular values sigma_i.")
    best = truncate(delta, r)
    error, best_error = (delta - result).norm().item(), (delta - best).norm().item()
    if error > best_error + TOLERANCE * scale:
        raise NotYet(f"{where} your result leaves an error ||Delta W - yours||_F of {error:.4g}, more than the "
                     f"{best_error:.4g} that the best rank-{r} matrix leaves: keep the directions of the largest "
                     "singular values, each with its own u_i, sigma_i and v_i (check which index of U and of V^T "
                     "runs over the directions).")
    return (result - best).abs().max().item()


@exercise("8.truncate", reference=lambda: truncate)
def grade_truncate(answer: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Rank-r truncations of tall, wide and square matrices: the rank asked for, the error of the best
    approximation (Eckart-Young), zero at r = 0, the matrix itself at full rank; the input untouched."""
    largest = 0.0
    for seed, (rows, columns, values) in enumerate(TRUNCATION_CASES):
        delta = spectrum_matrix(rows, columns, values, seed)
        for r in range(len(values) + 1):
            largest = max(largest, grade_one_truncation(answer, delta, r))
    return (f"on tall, wide and square matrices, at every rank from 0 to full, your truncation has the rank asked "
            f"for and is the best rank-r approximation (largest difference {largest:.1e}); the input is untouched.")


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
        ("the top 3 directions against the top 5 of the same basis (the first span inside the second)", basis, basis, 3, 5),
        ("two random subspaces (i = 2, j = 6)", orthonormal(n, 8, 2), orthonormal(n, 8, 3), 2, 6),
        ("two random subspaces (i = 6, j = 3)", orthonormal(n, 8, 4), orthonormal(n, 8, 5), 6, 3),
        ("two orthogonal subspaces (directions 1-4 against 5-8)", basis, basis[:, 4:], 4, 4),
        ("a 5-dimensional subspace against another basis of it, plus 5 more directions (i = 5, j = 10)", basis, nested, 5, 10),
    ]


def similarity_mistakes(u1: torch.Tensor, u2: torch.Tensor, i: int, j: int) -> dict[str, float]:
    """What typical slips compute, each under the message that names it."""
    overlap = (u1[:, :i].T @ u2[:, :j]).pow(2).sum().item()
    mistakes = {
        "your value is the Frobenius norm itself, not its square.": overlap**0.5 / min(i, j),
        "your value is not divided by min(i, j), so it grows with the dimensions compared.": overlap,
        "your value is divided by the larger of i and j; a small span inside a large one then scores below 1.":
            overlap / max(i, j),
    }
    if i <= u1.shape[0] and j <= u2.shape[0] and u1.shape[1] == u2.shape[1]:
        rows = (u1[:i] @ u2[:j].T).pow(2).sum().item() / min(i, j)
        mistakes["you compared the first rows; the directions are the columns, U[:, :i]."] = rows
    return mistakes


@exercise("8.similarity", reference=lambda: subspace_similarity)
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
        if expected > 1 - TOLERANCE:
            raise NotYet(f"{what} your similarity is {value:.4g}; a subspace inside the other (or equal to it) "
                         "shares every one of its directions, so phi should be as large as it can be.")
        if expected < TOLERANCE:
            raise NotYet(f"{what} your similarity is {value:.4g}; orthogonal subspaces share no direction.")
        raise NotYet(f"{what} your similarity is {value:.4g}, which is not ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j).")
    return (f"on {len(cases)} pairs of subspaces of R^20 your phi is 1 for a subspace with itself and for one inside "
            "another, 0 for orthogonal ones, and Hu et al.'s value for random ones, whichever of i and j is larger.")
