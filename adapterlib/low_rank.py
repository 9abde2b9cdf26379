r"""The linear algebra of low-rank updates: truncation, energy and subspace similarity.

A matrix has the singular value decomposition :math:`M = \sum_i \sigma_i u_i v_i^\top` with
:math:`\sigma_1 \ge \sigma_2 \ge \dots \ge 0` and orthonormal :math:`u_i` (output directions)
and :math:`v_i` (input directions). By the Eckart-Young theorem the best rank-:math:`r`
approximation in the Frobenius norm keeps the first :math:`r` terms,
:math:`M_r = \sum_{i \le r} \sigma_i u_i v_i^\top`, and keeps the share

.. math::  E(r) = \frac{\|M_r\|_F^2}{\|M\|_F^2} = \frac{\sum_{i \le r} \sigma_i^2}{\sum_i \sigma_i^2}

of the matrix's energy. Hu et al. (2021, §7) compare the top directions of two updates with
:func:`subspace_similarity`.
"""

from __future__ import annotations

import torch


def low_rank(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, r: int) -> torch.Tensor:
    r""":math:`\sum_{i \le r} \sigma_i u_i v_i^\top` from a thin SVD ``(u, s, vh)``."""
    return (u[:, :r] * s[:r]) @ vh[:r]


def truncate(delta: torch.Tensor, r: int | None) -> torch.Tensor:
    """The best rank-``r`` approximation of ``delta`` (Eckart-Young); ``delta`` itself, exactly,
    when ``r`` is None or at least its full rank."""
    if r is None or r >= min(delta.shape):
        return delta.clone()
    return low_rank(*torch.linalg.svd(delta, full_matrices=False), r)


def energy_shares(singular_values: torch.Tensor) -> torch.Tensor:
    r""":math:`E(r)` for :math:`r = 0, 1, \dots, n`: the cumulative share of :math:`\sum_i \sigma_i^2`."""
    energy = singular_values.double().pow(2)
    return torch.cat([energy.new_zeros(1), energy.cumsum(0)]) / energy.sum()


def subspace_similarity(u1: torch.Tensor, u2: torch.Tensor, i: int, j: int) -> float:
    r"""Hu et al.'s :math:`\varphi = \|U_1[:, :i]^\top U_2[:, :j]\|_F^2 / \min(i, j)` for orthonormal
    columns: 1 when one span contains the other, 0 when they are orthogonal, about
    :math:`\max(i, j) / n` for random subspaces of :math:`\mathbb{R}^n`."""
    return (u1[:, :i].T @ u2[:, :j]).pow(2).sum().item() / min(i, j)


def similarity_grid(u1: torch.Tensor, u2: torch.Tensor, rows: int, columns: int) -> list[list[float]]:
    """``grid[i-1][j-1]`` = :func:`subspace_similarity` ``(u1, u2, i, j)``."""
    overlap = (
        (u1[:, :rows].T @ u2[:, :columns]).pow(2).cumsum(0).cumsum(1)
    )  # [i-1, j-1]: sum over the top i x j
    sizes = torch.minimum(torch.arange(1, rows + 1)[:, None], torch.arange(1, columns + 1)[None, :])
    return (overlap / sizes).tolist()


def directions(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The update's output directions (left singular vectors, columns) and input directions (right)."""
    u, _, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return {"output": u, "input": vh.T}
