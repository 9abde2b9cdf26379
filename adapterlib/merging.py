r"""Merging task LoRAs: one update per targeted matrix from several tasks' updates.

A LoRA adapter :math:`t` changes each matrix it targets by :math:`\Delta W_t = \frac{\alpha_t}{r_t} B_t A_t`.
Merging combines the :math:`\Delta W_1, \dots, \Delta W_T` of each matrix into one :math:`\Delta W`,
entry by entry (:math:`w_t`: one weight per adapter):

* ``linear``, a weighted mean: :math:`\Delta W = \sum_t w_t \Delta W_t / \sum_t w_t`, weights
  :math:`\ge 0` (default equal: the plain mean);
* ``task_arithmetic`` (Ilharco et al., 2023), a weighted sum: :math:`\Delta W = \sum_t \lambda_t \Delta W_t`
  (default :math:`\lambda_t = 1`). A negative :math:`\lambda_t` is allowed: subtracting a task's
  update ("task negation") is how Ilharco et al. make a model forget a task;
* ``ties`` (Yadav et al., 2023): *trim* each :math:`\Delta W_t` to its :math:`k = \lfloor \rho n \rfloor`
  entries of largest magnitude (density :math:`\rho`, default 0.2: the paper's top 20%), the rest
  set to 0; *elect* a sign per entry, :math:`\gamma = \mathrm{sgn}(\sum_t \hat\tau_t)` (the sign
  with the larger total mass); *disjoint mean*: the mean over the tasks whose trimmed entry is
  nonzero and has sign :math:`\gamma`, each weighted by :math:`w_t \ge 0` (default 1):
  :math:`\Delta W = \sum_{t \in \mathcal{A}} w_t \hat\tau_t / |\mathcal{A}|`. With every
  :math:`w_t = \lambda` this is the paper's :math:`\lambda \tau_m`; it is also peft's ``ties``
  rule, applied here to :math:`\Delta W` (peft's ``ties_svd``);
* ``dare`` (Yu et al., 2024): drop each entry of each :math:`\Delta W_t` with probability
  :math:`p` (default 0.9) and multiply the kept ones by :math:`1/(1-p)`, so each entry keeps its
  expected value; then task arithmetic (weights of either sign). Drawn from a seeded generator:
  the same seed gives the same merge.

Why on :math:`\Delta W` and not on :math:`A` and :math:`B`. The ranks no longer matter (every
:math:`\Delta W_t` has the matrix's shape, whatever :math:`r_t` and :math:`\alpha_t`), and the result
is what the rules say. Combining the factors instead gives

.. math::  \Big(\sum_t w_t B_t\Big)\Big(\sum_s w_s A_s\Big) = \sum_t w_t^2 B_t A_t + \sum_{t \ne s} w_t w_s B_t A_s,

whose cross terms :math:`B_t A_s` pair one task's :math:`B` with another task's :math:`A`, a product
that neither task trained (and whose size depends on how each task happened to split its update
between :math:`A` and :math:`B`). peft's ``add_weighted_adapter`` combinations ``linear``, ``ties``
and ``dare_*`` work on the factors that way; its ``cat`` (the :math:`A`'s stacked along the rank,
the :math:`B`'s beside each other) is exactly :math:`\sum_t w_t \Delta W_t`, and its ``*_svd``
combinations work on :math:`\Delta W` like this module.

What is refused, in one line each: adapters of another method than LoRA (a bottleneck adapter's
change has a nonlinearity inside, and is no matrix to add), DoRA in particular (its layer computes
:math:`m \odot (W + sBA) / \lVert W + sBA \rVert_{row}`, so its change to :math:`W` depends on the
magnitude and on a norm per row, and is not its :math:`sBA`: merging DoRA adapters is not merging
their deltas), adapters that target different matrices, and weights that are NaN or infinite,
that do not match the number of adapters, or that are negative where the rule is a mean
(``linear``, ``ties``).

The merged updates become an ordinary LoRA adapter (:func:`add_merged_adapter`), stored exactly:
a TIES or DARE merge is in general of full rank (trimming or dropping entries of a low-rank
matrix destroys its low rank), so each :math:`\Delta W` is written as :math:`B A` from its singular
value decomposition at rank :math:`\min(d_{out}, d_{in})`. Each task keeps its own head: one merged
adapter per task, each with the same update and its task's head. ``merge_adapter()`` then folds
the update into the weights for inference at the base model's cost.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from .config import TaskType
from .inject import layer_paths, relative_to_layer
from .methods import method_of
from .methods.lora import LoraConfig, LoraLinear
from .peft_model import PeftModel
from .sites import HeadSite

RULES = ("linear", "task_arithmetic", "ties", "dare")
MEAN_RULES = ("linear", "ties")  # weights of a mean are >= 0


def lora_deltas(model: PeftModel, adapter_name: str) -> dict[str, torch.Tensor]:
    """``{matrix: Delta W}`` of one LoRA adapter, each ``(alpha / r) B A``, keyed by the
    layer-relative name of the matrix (``layers.0.attention.self.query``)."""
    paths = layer_paths(model.base_model)
    return {
        relative_to_layer(path, paths): site.adapters[adapter_name].delta_weight().detach()
        for path, site in model.base_model.named_modules()
        if isinstance(site, LoraLinear) and adapter_name in site.adapters
    }


def linear(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The weighted mean ``sum_t w_t dW_t / sum_t w_t``."""
    return task_arithmetic(deltas, weights) / sum(weights)


def task_arithmetic(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The weighted sum ``sum_t w_t dW_t``."""
    return sum(weight * delta for weight, delta in zip(weights, deltas))


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ``floor(density * n)`` entries of largest magnitude set to 0."""
    keep = int(density * delta.numel())
    mask = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    mask[delta.abs().flatten().topk(keep).indices] = True
    return delta * mask.view_as(delta)


def ties(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES: trim each to its top ``density`` share by magnitude, elect the sign of the summed
    trimmed entries (0 counts as +), take the weighted mean over the tasks that agree."""
    trimmed = torch.stack([trim(delta, density) for delta in deltas])
    elected = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)
    agrees = trimmed.sign() == elected
    shares = torch.tensor(weights, dtype=trimmed.dtype, device=trimmed.device)
    weighted = trimmed * shares.view(-1, *[1] * (trimmed.dim() - 1))
    return (weighted * agrees).sum(0) / agrees.sum(0).clamp(min=1)


def dare(
    deltas: Sequence[torch.Tensor], weights: Sequence[float], drop: float, generator: torch.Generator
) -> torch.Tensor:
    """DARE: drop each entry with probability ``drop``, rescale the rest by ``1 / (1 - drop)``, then
    the weighted sum."""
    kept = [
        delta * (torch.rand(delta.shape, generator=generator) >= drop).to(delta) / (1 - drop)
        for delta in deltas
    ]
    return task_arithmetic(kept, weights)


def check_adapters(model: PeftModel, adapters: Sequence[str]) -> None:
    """The adapters must be distinct LoRA adapters of ``model`` on the same matrices."""
    if isinstance(adapters, str) or not isinstance(adapters, (list, tuple)) or not adapters:
        raise TypeError(f"adapters is a list of adapter names, e.g. ['sst2', 'cr']; got {adapters!r}.")
    if len(set(adapters)) < len(adapters):
        raise ValueError(
            f"adapters names an adapter twice: {list(adapters)}; give it a larger weight instead."
        )
    for name in adapters:
        model._check_known(name)
    labels = {name: method_of(model.peft_config[name]).label for name in adapters}
    if len(set(labels.values())) > 1:
        listed = ", ".join(f"{name} is {label}" for name, label in labels.items())
        raise ValueError(
            f"adapters of different methods cannot be merged ({listed}); merge LoRA adapters only."
        )
    label = labels[adapters[0]]
    if label == "DoRA":
        raise ValueError(
            "DoRA adapters cannot be merged by their updates: a DoRA layer computes m * (W + sBA) / ||W + sBA|| "
            "row by row, so its change to W depends on the magnitude and the norms, not on sBA alone."
        )
    if type(model.peft_config[adapters[0]]) is not LoraConfig:
        raise ValueError(
            f"merging combines LoRA updates Delta W = (alpha/r) B A; {label} adapters change no weight matrix "
            "by an update that could be added."
        )
    first = adapters[0]
    for name in adapters[1:]:
        if sorted(lora_deltas(model, name)) != sorted(lora_deltas(model, first)):
            targets = [", ".join(model.peft_config[n].target_modules) for n in (first, name)]
            raise ValueError(
                f"adapters {first!r} and {name!r} target different matrices ({targets[0]} vs {targets[1]}); "
                "merge adapters trained on the same target_modules (their ranks may differ)."
            )


def check_options(rule: str, adapters: Sequence[str], weights: list, density: float, drop: float) -> None:
    """One weight per adapter, finite, >= 0 for a mean; TIES's density and DARE's drop in range."""
    if len(weights) != len(adapters):
        raise ValueError(f"{len(weights)} weights for {len(adapters)} adapters; give one weight per adapter.")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite numbers, got {weights}.")
    if rule in MEAN_RULES and min(weights) < 0:
        raise ValueError(
            f"{rule} weights are shares of a mean and must be >= 0, got {weights}; "
            "to subtract a task, use task_arithmetic (or dare) with a negative weight."
        )
    if rule == "linear" and sum(weights) <= 0:
        raise ValueError("linear weights must not all be 0: they are divided by their sum.")
    if rule == "ties" and not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density is the share of entries TIES keeps, in (0, 1]; got {density!r}.")
    if rule == "dare" and not (isinstance(drop, (int, float)) and 0 <= drop < 1):
        raise ValueError(f"drop is the probability DARE drops an entry, in [0, 1); got {drop!r}.")


def merge_deltas(
    model: PeftModel,
    adapters: Sequence[str],
    rule: str = "linear",
    weights: Sequence[float] | None = None,
    density: float = 0.2,
    drop: float = 0.9,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """``{matrix: merged Delta W}`` of the LoRA ``adapters`` by ``rule`` (see the module's docstring).

    ``weights``: one per adapter (default 1 each). ``density``: TIES's kept share. ``drop`` and
    ``seed``: DARE's drop probability and its random generator's seed. Nothing in the model changes.
    """
    if rule not in RULES:
        raise ValueError(f"merging rule {rule!r} is not known; use one of: {', '.join(RULES)}.")
    check_adapters(model, adapters)
    weights = [1.0] * len(adapters) if weights is None else list(weights)
    check_options(rule, adapters, weights, density, drop)
    generator = torch.Generator().manual_seed(seed)
    per_adapter = [lora_deltas(model, name) for name in adapters]
    merged = {}
    for matrix in per_adapter[0]:
        deltas = [deltas[matrix] for deltas in per_adapter]
        if rule == "linear":
            merged[matrix] = linear(deltas, weights)
        elif rule == "task_arithmetic":
            merged[matrix] = task_arithmetic(deltas, weights)
        elif rule == "ties":
            merged[matrix] = ties(deltas, weights, density)
        else:
            merged[matrix] = dare([d.cpu() for d in deltas], weights, drop, generator).to(deltas[0].device)
    return merged


def add_merged_adapter(
    model: PeftModel,
    adapter_name: str,
    deltas: dict[str, torch.Tensor],
    head_from: str,
    rank: int | None = None,
) -> None:
    """Add ``deltas`` (from :func:`merge_deltas`) as a new LoRA adapter ``adapter_name`` with a copy
    of adapter ``head_from``'s head (its targets too); it becomes the active adapter, as
    :meth:`PeftModel.add_adapter` makes a new one.

    Each ``Delta W = U S V^T`` is stored as ``B = U_r S_r``, ``A = V_r^T`` with ``alpha = r``
    (scaling 1); ``rank`` None keeps every singular value (exact, ``min(d_out, d_in)``), a smaller
    ``rank`` keeps the largest ones.
    """
    model._check_known(head_from)
    source = model.peft_config[head_from]
    if sorted(deltas) != sorted(lora_deltas(model, head_from)):
        raise ValueError(
            f"deltas do not cover the matrices adapter {head_from!r} targets; pass merge_deltas' result."
        )
    full = min(min(delta.shape) for delta in deltas.values())
    if rank is not None and not (isinstance(rank, int) and 1 <= rank <= full):
        raise ValueError(
            f"rank must be an integer in 1..{full} (the smaller side of the matrices), got {rank!r}."
        )
    r = rank or full
    factors = {}
    for matrix, delta in deltas.items():
        u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
        factors[matrix] = ((u[:, :r] * s[:r]).to(delta.dtype), vh[:r].to(delta.dtype))
    config = LoraConfig(
        task_type=source.task_type, r=r, alpha=float(r), dropout=0.0, target_modules=source.target_modules
    )
    model.add_adapter(adapter_name, config)
    paths = layer_paths(model.base_model)
    with torch.no_grad():
        for path, site in model.base_model.named_modules():
            if isinstance(site, LoraLinear) and adapter_name in site.adapters:
                b, a = factors[relative_to_layer(path, paths)]
                site.adapters[adapter_name].B.copy_(b)
                site.adapters[adapter_name].A.copy_(a)
    head_site = getattr(model.base_model, "classifier", None)
    if source.task_type == TaskType.SEQ_CLS and isinstance(head_site, HeadSite):  # its own head, any size
        head_site.adapters[adapter_name] = copy.deepcopy(head_site.adapters[head_from])
    model.set_adapter(adapter_name)  # the copied head trains with the adapter, as a new head would
