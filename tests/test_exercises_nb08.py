"""Notebook 8's exercises: right answers pass, typical mistakes are named, package code is refused,
also when the answer only wraps it."""

import sys

import pytest
import torch

from adapterlib import low_rank
from adapterlib.exercises import NotYet, Unanswered, check, grade, nb08
from adapterlib.exercises.nb08 import energy_share as package_energy_share
from adapterlib.low_rank import subspace_similarity as package_similarity
from adapterlib.low_rank import truncate as package_truncate

# ---------------------------------------------------------------- 8.energy


def right_energy(singular_values, r):
    return (singular_values[:r].pow(2).sum() / singular_values.pow(2).sum()).item()


def numpy_energy(singular_values, r):
    """Also right: through NumPy, returning a NumPy float."""
    energy = singular_values.numpy() ** 2
    return energy[:r].sum() / energy.sum()


def unsquared(singular_values, r):
    return (singular_values[:r].sum() / singular_values.sum()).item()


def one_too_many(singular_values, r):
    return (singular_values[: r + 1].pow(2).sum() / singular_values.pow(2).sum()).item()


def norm_ratio(singular_values, r):
    return (singular_values[:r].norm() / singular_values.norm()).item()


def smallest_first(singular_values, r):
    """Keeps the r smallest singular values instead of the largest."""
    return (singular_values.flip(0)[:r].pow(2).sum() / singular_values.pow(2).sum()).item()


def percent(singular_values, r):
    return 100 * right_energy(singular_values, r)


def left_out(singular_values, r):
    """The share of the singular values after the first r: 1 - E(r)."""
    return (singular_values[r:].pow(2).sum() / singular_values.pow(2).sum()).item()


def cumulative_at_r_minus_1(singular_values, r):
    """Right for r >= 1; at r = 0 the index -1 reads the whole sum."""
    energy = singular_values.pow(2).cumsum(0)
    return (energy[r - 1] / energy[-1]).item()


def one_too_few(singular_values, r):
    return (singular_values[: max(r - 1, 0)].pow(2).sum() / singular_values.pow(2).sum()).item()


def squares_in_place(singular_values, r):
    """Right values on a fresh tensor, but it squares the tensor it was given."""
    singular_values.pow_(2)
    return (singular_values[:r].sum() / singular_values.sum()).item()


def test_right_energy_shares_pass():
    assert "share of sum sigma^2" in grade("8.energy", right_energy)
    grade("8.energy", numpy_energy)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (unsquared, "sum of the singular values"),
        (one_too_many, "one singular value too many"),
        (norm_ratio, "ratio of Frobenius norms"),
        (smallest_first, "r smallest"),
        (percent, "fraction from 0 to 1.*not a percentage"),
        (left_out, "falls as r grows.*leaves out"),
        (cumulative_at_r_minus_1, "except r = 0.*-1"),
        (one_too_few, "one singular value too few"),
        (squares_in_place, "changed the singular values it was given"),
        (lambda s, r: 0.5, "r = 0.*keeping nothing"),
        (lambda s, r: min(r, 1), "not the share"),
        (lambda s, r: "half", "not a number"),
    ],
)
def test_energy_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("8.energy", wrong)


def test_package_energy_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("8.energy", package_energy_share)

    def template(singular_values, r):
        raise NotImplementedError("write energy_share")

    with pytest.raises(Unanswered):
        grade("8.energy", template)
    assert check("8.energy", template) is package_energy_share
    assert "Not answered yet" in capsys.readouterr().out
    assert package_energy_share(torch.tensor([3.0, 1.0]), 1) == pytest.approx(0.9)


# ---------------------------------------------------------------- 8.truncate


def right_truncate(delta, r):
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:r]


def zeroing_truncate(delta, r):
    """Also right: zero the singular values after the r-th and multiply back."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    s[r:] = 0
    return u @ torch.diag(s) @ vh


def without_sigma(delta, r):
    u, _, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :r] @ vh[:r]


def smallest_directions(delta, r):
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    n = len(s)
    return u[:, n - r :] @ torch.diag(s[n - r :]) @ vh[n - r :]


def columns_of_vh(delta, r):
    """Takes the first r columns of V^T (transposed) where its first r rows are the directions."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:, :r].T


def untruncated(delta, r):
    return delta.clone()


def in_place(delta, r):
    """Right values, but it writes the truncation into the matrix it was given."""
    delta.copy_(right_truncate(delta, r))
    return delta


def sigma_squared(delta, r):
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return (u[:, :r] * s[:r] ** 2) @ vh[:r]


def the_rest(delta, r):
    """Zero at r = 0 by a special case, then everything the first r terms leave out."""
    if r == 0:
        return torch.zeros_like(delta)
    return delta - right_truncate(delta, r)


def test_right_truncations_pass():
    assert "best rank-r approximation" in grade("8.truncate", right_truncate)
    grade("8.truncate", zeroing_truncate)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (without_sigma, "weighted by their singular values"),
        (smallest_directions, "r smallest singular values"),
        (sigma_squared, "weighted by sigma_i\\^2"),
        (lambda delta, r: right_truncate(delta, max(r - 1, 0)), "r - 1 directions, one too few"),
        (lambda delta, r: right_truncate(delta, r + 1), "r \\+ 1 directions, one too many"),
        (the_rest, "except the first r terms"),
        (lambda delta, r: right_truncate(delta, r).bfloat16(), "bfloat16, which rounds"),
        (lambda delta, r: right_truncate(delta, r).long(), "torch.int64"),
        (columns_of_vh, r"raised RuntimeError|more than the"),
        (untruncated, "has rank"),
        (in_place, "changed the matrix it was given"),
        (lambda delta, r: right_truncate(delta, r).T, "shape"),
        (lambda delta, r: right_truncate(delta, r).tolist(), "torch tensor"),
    ],
)
def test_truncation_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("8.truncate", wrong)


def test_package_truncation_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("8.truncate", package_truncate)

    def template(delta, r):
        raise NotImplementedError("write truncate")

    assert check("8.truncate", template) is package_truncate
    assert "Not answered yet" in capsys.readouterr().out


# ---------------------------------------------------------------- 8.similarity


def right_similarity(u1, u2, i, j):
    return (torch.linalg.matrix_norm(u1[:, :i].T @ u2[:, :j]) ** 2 / min(i, j)).item()


def trace_similarity(u1, u2, i, j):
    """Also right: the squared Frobenius norm as the trace of P1 P2, the product of the two projections."""
    p1, p2 = u1[:, :i] @ u1[:, :i].T, u2[:, :j] @ u2[:, :j].T
    return (torch.trace(p1 @ p2) / min(i, j)).item()


def overlap(u1, u2, a, b):
    """||U1[:, :a]^T U2[:, :b]||_F^2."""
    return (torch.linalg.matrix_norm(u1[:, :a].T @ u2[:, :b]) ** 2).item()


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda u1, u2, i, j: overlap(u1, u2, i, j) ** 0.5 / min(i, j), "not its square"),
        (lambda u1, u2, i, j: overlap(u1, u2, i, j), "not divided by min"),
        (lambda u1, u2, i, j: overlap(u1, u2, i, j) / max(i, j), "larger of i and j"),
        (
            lambda u1, u2, i, j: (torch.linalg.matrix_norm(u1[:i] @ u2[:j].T) ** 2).item() / min(i, j),
            "columns",
        ),
        (lambda u1, u2, i, j: overlap(u1, u2, i, j) / (i * j), r"divided by i \* j"),
        (lambda u1, u2, i, j: overlap(u1, u2, i, j) / (i * j) ** 0.5, "sqrt"),
        (lambda u1, u2, i, j: overlap(u1, u2, i + 1, j + 1) / min(i, j), r"i \+ 1 columns"),
        (lambda u1, u2, i, j: overlap(u1, u2, j, i) / min(i, j), "first j columns of U1"),
        (lambda u1, u2, i, j: (u1[:, :i].T @ u2[:, :j]).abs().sum().item() / min(i, j), "absolute values"),
        (lambda u1, u2, i, j: 1.5, "above 1, which phi cannot be"),
        (lambda u1, u2, i, j: 1.0, "which is not"),
    ],
)
def test_similarity_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("8.similarity", wrong)


def test_right_similarities_pass():
    assert "Hu et al." in grade("8.similarity", right_similarity)
    grade("8.similarity", trace_similarity)


def test_package_similarity_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("8.similarity", package_similarity)

    def template(u1, u2, i, j):
        raise NotImplementedError("write subspace_similarity")

    assert check("8.similarity", template) is package_similarity
    assert "Not answered yet" in capsys.readouterr().out
    assert check("8.similarity", ...) is package_similarity


# ---------------------------------------------------------------- wrapping the package


@pytest.mark.parametrize(
    "exercise_id, wrapper, named",
    [
        ("8.energy", lambda s, r: low_rank.energy_shares(s)[r].item(), "low_rank.energy_shares"),
        ("8.energy", lambda s, r: nb08.energy_share(s, r), "nb08.energy_share"),
        ("8.truncate", lambda delta, r: low_rank.truncate(delta, r), "low_rank.truncate"),
        (
            "8.truncate",
            lambda delta, r: low_rank.low_rank(*torch.linalg.svd(delta, full_matrices=False), r),
            "low_rank.low_rank",
        ),
        (
            "8.similarity",
            lambda u1, u2, i, j: package_similarity(u1, u2, i, j),
            "low_rank.subspace_similarity",
        ),
        (
            "8.similarity",
            lambda u1, u2, i, j: low_rank.similarity_grid(u1, u2, i, j)[i - 1][j - 1],
            "low_rank.similarity_grid",
        ),
    ],
)
def test_wrapping_the_package_is_refused(exercise_id, wrapper, named):
    before = sys.getprofile()
    with pytest.raises(NotYet, match=f"calls the package's adapterlib.*{named}; write it with torch"):
        grade(exercise_id, wrapper)
    assert sys.getprofile() is before


def test_wrapping_the_fallback_that_check_returned_is_refused(capsys):
    fallback = check("8.truncate", ...)  # unanswered: check hands back the package's truncate

    def wrapped(delta, r):
        return fallback(delta, r)

    with pytest.raises(NotYet, match="low_rank.truncate"):
        grade("8.truncate", wrapped)


def test_a_package_call_is_refused_even_when_the_answer_catches_the_refusal():
    def careful(delta, r):
        try:
            return low_rank.truncate(delta, r)
        except Exception:
            return right_truncate(delta, r)

    with pytest.raises(NotYet, match="low_rank.truncate"):
        grade("8.truncate", careful)
    assert "best rank-r" in grade(
        "8.truncate", right_truncate
    )  # the watch is gone: a right answer passes after
