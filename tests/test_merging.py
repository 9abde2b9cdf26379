"""Merging task LoRAs on Delta W: against peft where the combination is the same, by hand, and the errors."""

import re

import pytest
import torch

from adapterlib import AdapterConfig, DoraConfig, LoraConfig, TaskType, get_peft_model
from adapterlib.merging import add_merged_adapter, dare, lora_deltas, merge_deltas, task_arithmetic, ties
from adapterlib.methods.lora import LoraLinear
from adapterlib.multitask import set_head
from conftest import assert_unchanged, snapshot, tiny_classifier, tiny_encoder

peft = pytest.importorskip("peft", reason="peft is the reference implementation; install requirements.txt")

RANKS = {"x": (4, 8.0), "y": (2, 6.0)}  # (r, alpha) of each adapter: ranks and scalings differ


def randomise(model) -> None:
    """Trained-looking A and B for every adapter (B starts at zero)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for site in model.sites(LoraLinear):
            for update in site.adapters.values():
                update.A.copy_(torch.randn(update.A.shape, generator=generator) * 0.3)
                update.B.copy_(torch.randn(update.B.shape, generator=generator) * 0.3)


def two_loras(ranks=RANKS, model=None):
    model = model or tiny_encoder()
    peft_model = None
    for name, (r, alpha) in ranks.items():
        config = LoraConfig(r=r, alpha=alpha, dropout=0.0, task_type=getattr(model, "task_type", None))
        if peft_model is None:
            peft_model = get_peft_model(model, config, name)
        else:
            peft_model.add_adapter(name, config)
    randomise(peft_model)
    return peft_model


def peft_copy(ours, ranks=RANKS):
    """peft's LoRA on an equal tiny encoder, with our adapters' A and B."""
    reference = None
    for name, (r, alpha) in ranks.items():
        config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["query", "value"])
        if reference is None:
            reference = peft.get_peft_model(tiny_encoder(), config, adapter_name=name)
        else:
            reference.add_adapter(name, config)
    theirs = peft_sites(reference)
    ours_sites = {n: m for n, m in zip(lora_deltas(ours, "x"), ours.sites(LoraLinear))}
    assert theirs.keys() == ours_sites.keys()
    with torch.no_grad():
        for matrix, site in ours_sites.items():
            for name in ranks:
                theirs[matrix].lora_A[name].weight.copy_(site.adapters[name].A)
                theirs[matrix].lora_B[name].weight.copy_(site.adapters[name].B)
    return reference


def peft_sites(reference) -> dict:
    """peft's LoRA layers keyed as lora_deltas keys matrices (``layers.0.attention.self.query``)."""
    sites = {}
    for path, module in reference.named_modules():
        found = re.search(r"encoder\.layer\.(\d+)\.(.*)$", path)
        if found and hasattr(module, "lora_A"):
            sites[f"layers.{found[1]}.{found[2]}"] = module
    return sites


def peft_merged(reference, weights, combination, **options) -> dict[str, torch.Tensor]:
    reference.add_weighted_adapter(["x", "y"], weights, "merged", combination_type=combination, **options)
    return {
        matrix: site.get_delta_weight("merged").detach() for matrix, site in peft_sites(reference).items()
    }


def assert_same_deltas(ours: dict, theirs: dict, atol: float) -> None:
    assert ours.keys() == theirs.keys() and ours
    for matrix in ours:
        torch.testing.assert_close(ours[matrix], theirs[matrix], atol=atol, rtol=0)


def test_task_arithmetic_equals_peft_cat_for_different_ranks():
    ours = two_loras()
    weights = [0.7, -0.4]  # a negative weight: task negation
    theirs = peft_merged(peft_copy(ours), weights, "cat")
    assert_same_deltas(merge_deltas(ours, ["x", "y"], "task_arithmetic", weights), theirs, atol=1e-6)


def test_task_arithmetic_equals_peft_svd_at_full_rank():
    ours = two_loras()
    theirs = peft_merged(peft_copy(ours), [0.5, 1.5], "svd", svd_rank=32)
    assert_same_deltas(merge_deltas(ours, ["x", "y"], "task_arithmetic", [0.5, 1.5]), theirs, atol=1e-5)


def test_ties_equals_peft_ties_svd_at_full_rank():
    ours = two_loras()
    theirs = peft_merged(peft_copy(ours), [0.8, 0.5], "ties_svd", svd_rank=32, density=0.3)
    assert_same_deltas(merge_deltas(ours, ["x", "y"], "ties", [0.8, 0.5], density=0.3), theirs, atol=1e-5)


def test_merging_a_and_b_separately_is_not_merging_delta_w():
    """peft's `linear` combines the factors: (sum_t c_t B_t)(sum_s c_s A_s), c_t = sqrt(w_t s_t).
    Its diagonal terms are sum_t w_t dW_t; the cross terms B_t A_s (t != s) come on top."""
    ranks = {"x": (4, 8.0), "y": (4, 4.0)}  # peft's `linear` needs equal ranks
    ours = two_loras(ranks)
    weights = [0.6, 0.9]
    theirs = peft_merged(peft_copy(ours, ranks), weights, "linear")
    on_delta_w = merge_deltas(ours, ["x", "y"], "task_arithmetic", weights)
    for matrix, site in zip(on_delta_w, ours.sites(LoraLinear)):
        a, b = site.adapters["x"], site.adapters["y"]
        c_a, c_b = (weights[0] * a.scaling) ** 0.5, (weights[1] * b.scaling) ** 0.5
        cross = c_a * c_b * (a.B @ b.A + b.B @ a.A)
        torch.testing.assert_close(theirs[matrix], on_delta_w[matrix] + cross.detach(), atol=1e-5, rtol=0)
        assert cross.abs().max() > 0.1 * on_delta_w[matrix].abs().max()


def test_ties_by_hand():
    tasks = [
        torch.tensor([[3.0, -1, 0.5, -2]]),
        torch.tensor([[-1.0, -4, 2, 2.5]]),
        torch.tensor([[1.0, 0, 0, 3]]),
    ]
    # trimmed to 2 of 4: [3,0,0,-2], [0,-4,0,2.5], [1,0,0,3]; elected signs of [4,-4,0,3.5]: + - + +
    expected = torch.tensor([[(3 + 1) / 2, -4, 0, (2.5 + 3) / 2]])
    torch.testing.assert_close(ties(tasks, [1.0, 1.0, 1.0], density=0.5), expected)
    torch.testing.assert_close(ties(tasks, [2.0, 2.0, 2.0], density=0.5), 2 * expected)


def test_dare_is_seeded_unbiased_and_drops_the_share_asked():
    delta = torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    draw = lambda seed, p=0.5: dare([delta], [1.0], p, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    kept = draw(1) != 0
    assert 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(draw(1)[kept], 2 * delta[kept])
    mean = torch.stack([draw(seed) for seed in range(400)]).mean(0)
    assert (mean - delta).abs().mean() < 0.1 * delta.abs().mean()
    torch.testing.assert_close(draw(1, p=0.0), task_arithmetic([delta], [1.0]))


def test_dare_through_the_model_is_reproducible_by_seed():
    ours = two_loras()
    one = merge_deltas(ours, ["x", "y"], "dare", drop=0.7, seed=3)
    assert all(torch.equal(one[m], merge_deltas(ours, ["x", "y"], "dare", drop=0.7, seed=3)[m]) for m in one)
    assert_same_deltas(
        merge_deltas(ours, ["x", "y"], "dare", drop=0.0), merge_deltas(ours, ["x", "y"], "task_arithmetic"), 0
    )


def test_linear_is_the_weighted_mean():
    ours = two_loras()
    mean = merge_deltas(ours, ["x", "y"], "linear", [1.0, 3.0])
    a, b = lora_deltas(ours, "x"), lora_deltas(ours, "y")
    assert_same_deltas(mean, {m: (a[m] + 3 * b[m]) / 4 for m in a}, atol=1e-7)


def test_merged_adapter_holds_the_update_exactly_and_each_task_its_head(batch):
    model = tiny_classifier()
    model.task_type = TaskType.SEQ_CLS
    ours = two_loras(model=model)
    set_head(ours, "y", 6)
    deltas = merge_deltas(ours, ["x", "y"], "ties", density=0.4)
    for task in ("x", "y"):
        add_merged_adapter(ours, f"merged_{task}", deltas, head_from=task)
    assert ours.active_adapter == "merged_y"
    assert_same_deltas(lora_deltas(ours, "merged_y"), deltas, atol=1e-5)
    heads = ours.base_model.classifier.adapters
    assert torch.equal(heads["merged_x"].weight, heads["x"].weight) and heads["merged_y"].out_features == 6
    assert heads["merged_y"].weight.requires_grad and heads["merged_y"] is not heads["y"]
    assert ours(**batch).logits.shape == (2, 6)
    ours.set_adapter("merged_x")
    assert ours(**batch).logits.shape == (2, 2)


def test_a_lower_rank_keeps_the_largest_singular_values():
    ours = two_loras()
    deltas = merge_deltas(ours, ["x", "y"], "task_arithmetic")  # rank <= 4 + 2
    add_merged_adapter(ours, "six", deltas, head_from="x", rank=6)
    assert_same_deltas(lora_deltas(ours, "six"), deltas, atol=1e-5)
    with pytest.raises(ValueError, match=r"rank must be an integer in 1..32"):
        add_merged_adapter(ours, "big", deltas, head_from="x", rank=33)


@pytest.mark.parametrize(
    "adapters, rule, options, message",
    [
        (["x", "y"], "mean", {}, r"merging rule 'mean' is not known; use one of: linear, task_arithmetic"),
        (["x", "x"], "linear", {}, r"names an adapter twice"),
        (["x", "z"], "linear", {}, r"no adapter named 'z'"),
        ("x", "linear", {}, r"adapters is a list of adapter names"),
        (["x", "y"], "linear", {"weights": [1.0]}, r"1 weights for 2 adapters"),
        (["x", "y"], "task_arithmetic", {"weights": [1.0, float("nan")]}, r"weights must be finite numbers"),
        (["x", "y"], "linear", {"weights": [1.0, float("inf")]}, r"weights must be finite numbers"),
        (
            ["x", "y"],
            "linear",
            {"weights": [1.0, -1.0]},
            r"linear weights are shares of a mean and must be >= 0",
        ),
        (
            ["x", "y"],
            "ties",
            {"weights": [1.0, -1.0]},
            r"ties weights .* use task_arithmetic .* negative weight",
        ),
        (["x", "y"], "linear", {"weights": [0.0, 0.0]}, r"must not all be 0"),
        (["x", "y"], "ties", {"density": 0.0}, r"density is the share of entries TIES keeps, in \(0, 1\]"),
        (["x", "y"], "dare", {"drop": 1.0}, r"drop is the probability DARE drops an entry, in \[0, 1\)"),
    ],
)
def test_bad_merges_are_refused_in_one_line(adapters, rule, options, message):
    ours = two_loras()
    before = snapshot(ours)
    with pytest.raises((ValueError, TypeError), match=message) as error:
        merge_deltas(ours, adapters, rule, **options)
    assert "\n" not in str(error.value)
    assert_unchanged(ours, before)


def test_other_methods_dora_and_other_targets_are_refused():
    mixed = get_peft_model(tiny_encoder(), LoraConfig(), "x")
    mixed.add_adapter("y", AdapterConfig())
    with pytest.raises(ValueError, match=r"different methods cannot be merged \(x is LoRA, y is adapter\)"):
        merge_deltas(mixed, ["x", "y"])
    mixed.add_adapter("z", AdapterConfig())
    with pytest.raises(ValueError, match=r"adapter adapters change no weight matrix"):
        merge_deltas(mixed, ["y", "z"])
    dora = get_peft_model(tiny_encoder(), DoraConfig(), "x")
    dora.add_adapter("y", DoraConfig())
    with pytest.raises(ValueError, match=r"DoRA adapters cannot be merged by their updates: .* magnitude"):
        merge_deltas(dora, ["x", "y"])
    targets = get_peft_model(tiny_encoder(), LoraConfig(), "x")
    targets.add_adapter("y", LoraConfig(target_modules=("query", "key")))
    with pytest.raises(ValueError, match=r"target different matrices \(query, value vs query, key\)"):
        merge_deltas(targets, ["x", "y"])
