"""Notebook 8's exercises: right answers pass, typical mistakes are named, package code is refused."""

import pytest
import torch

from adapterlib.exercises import NotYet, Unanswered, check, grade
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


def test_right_energy_shares_pass():
    assert "share of sum sigma^2" in grade("8.energy", right_energy)
    grade("8.energy", numpy_energy)


@pytest.mark.parametrize("wrong, message", [
    (unsquared, "sum of the singular values"),
    (one_too_many, "one singular value too many"),
    (norm_ratio, "ratio of Frobenius norms"),
    (smallest_first, "not the share"),
    (lambda s, r: "half", "not a number"),
])
def test_energy_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("8.energy", wrong)


def test_package_energy_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's own"):
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
    return u[:, n - r:] @ torch.diag(s[n - r:]) @ vh[n - r:]


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


def test_right_truncations_pass():
    assert "best rank-r approximation" in grade("8.truncate", right_truncate)
    grade("8.truncate", zeroing_truncate)


@pytest.mark.parametrize("wrong, message", [
    (without_sigma, "weighted by their singular values"),
    (smallest_directions, "more than the"),
    (columns_of_vh, r"raised RuntimeError|more than the"),
    (untruncated, "has rank"),
    (in_place, "changed the matrix it was given"),
    (lambda delta, r: right_truncate(delta, r).T, "shape"),
    (lambda delta, r: right_truncate(delta, r).tolist(), "torch tensor"),
])
def test_truncation_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("8.truncate", wrong)


def test_package_truncation_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's own"):
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


@pytest.mark.parametrize("wrong, message", [
    (lambda u1, u2, i, j: torch.linalg.matrix_norm(u1[:, :i].T @ u2[:, :j]).item() / min(i, j), "not its square"),
    (lambda u1, u2, i, j: (torch.linalg.matrix_norm(u1[:, :i].T @ u2[:, :j]) ** 2).item(), "not divided by min"),
    (lambda u1, u2, i, j: (torch.linalg.matrix_norm(u1[:, :i].T @ u2[:, :j]) ** 2).item() / max(i, j), "larger of i and j"),
    (lambda u1, u2, i, j: (torch.linalg.matrix_norm(u1[:i] @ u2[:j].T) ** 2).item() / min(i, j), "columns"),
    (lambda u1, u2, i, j: 1.0, "which is not"),
])
def test_similarity_mistakes_are_named(wrong, message):
    with pytest.raises(NotYet, match=message):
        grade("8.similarity", wrong)


def test_right_similarities_pass():
    assert "Hu et al." in grade("8.similarity", right_similarity)
    grade("8.similarity", trace_similarity)


def test_package_similarity_is_refused_and_is_the_fallback(capsys):
    with pytest.raises(NotYet, match="package's own"):
        grade("8.similarity", package_similarity)

    def template(u1, u2, i, j):
        raise NotImplementedError("write subspace_similarity")

    assert check("8.similarity", template) is package_similarity
    assert "Not answered yet" in capsys.readouterr().out
    assert check("8.similarity", ...) is package_similarity
