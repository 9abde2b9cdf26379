"""One batch of many tasks: each example's logits equal those of its task run alone."""

import pytest
import torch
import torch.nn.functional as F

from adapterlib import (
    AdapterConfig,
    BitFitConfig,
    DoraConfig,
    IA3Config,
    LoraConfig,
    ParallelAdapterConfig,
    PrefixTuningConfig,
    TaskType,
    get_peft_model,
)
from adapterlib.multitask import mixed_forward, routed, set_head
from conftest import assert_unchanged, perturbed, refused_unchanged, snapshot, tiny_classifier

SEQ_CLS = TaskType.SEQ_CLS
# One adapter per method that acts example by example; two LoRAs on the same Linear layers.
ADAPTERS = {
    "sst2": LoraConfig(task_type=SEQ_CLS, r=4),
    "trec": AdapterConfig(task_type=SEQ_CLS, r=8, placement="houlsby"),
    "cr": LoraConfig(task_type=SEQ_CLS, r=2, target_modules=("query", "value", "output.dense")),
    "subj": DoraConfig(task_type=SEQ_CLS, r=4),
    "bias": BitFitConfig(task_type=SEQ_CLS),
    "scale": IA3Config(task_type=SEQ_CLS),
    "beside": ParallelAdapterConfig(task_type=SEQ_CLS, r=8),
}
CLASSES = {"trec": 6, "subj": 3}  # every other head keeps the base's 2


def many_task_model(adapters=ADAPTERS):
    """A tiny BERT with one trained-looking adapter and head per task."""
    model = None
    for seed, (name, config) in enumerate(adapters.items()):
        if model is None:
            model = get_peft_model(tiny_classifier(), config, name)
        else:
            model.add_adapter(name, config)
        if name in CLASSES:
            set_head(model, name, CLASSES[name])
        perturbed(model, seed=seed)
    return model.eval()


def make_batch(size: int, seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 100, (size, 7), generator=generator)
    attention_mask = torch.ones(size, 7, dtype=torch.long)
    for i in range(0, size, 3):  # every third example padded after 4 tokens
        attention_mask[i, 4:] = 0
        input_ids[i, 4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def alone(model, name, batch, rows):
    """The logits of ``rows`` with only adapter ``name`` active, as a task runs on its own."""
    model.set_adapter(name)
    with torch.no_grad():
        return model(**{k: v[rows] for k, v in batch.items()}).logits


def test_every_example_gets_what_its_task_alone_gives():
    model = many_task_model()
    names = [list(ADAPTERS)[i % len(ADAPTERS)] for i in range(17)]
    batch = make_batch(len(names))
    with torch.no_grad():
        output = mixed_forward(model, names, **batch)
    assert output.logits.shape == (17, 6)
    for name in ADAPTERS:
        rows = [i for i, n in enumerate(names) if n == name]
        expected = alone(model, name, batch, rows)
        assert expected.shape == (len(rows), CLASSES.get(name, 2))
        for k, row in enumerate(rows):
            assert output.num_classes[row] == expected.shape[1]
            torch.testing.assert_close(output.example_logits(row), expected[k], atol=1e-6, rtol=0)
            assert torch.isneginf(output.logits[row, expected.shape[1] :]).all()


def test_the_tasks_adapters_really_differ():
    """A mixed-up route would pass the equality test if the adapters computed the same."""
    model = many_task_model()
    batch = make_batch(4)
    sst2 = alone(model, "sst2", batch, list(range(4)))
    cr = alone(model, "cr", batch, list(range(4)))
    assert (sst2 - cr).abs().max() > 1e-2


def test_mixed_batch_leaves_the_model_as_it_was():
    model = many_task_model()
    model.set_adapter("cr")
    before = snapshot(model)
    forwards = {id(site): site.forward for site in model.base_model.modules() if hasattr(site, "adapters")}
    with torch.no_grad():
        mixed_forward(model, ["sst2", "trec", "cr"], **make_batch(3))
    assert_unchanged(model, before)
    assert model.active_adapter == "cr"
    assert all("forward" not in site.__dict__ for site in model.base_model.modules())
    assert {
        id(s): s.forward for s in model.base_model.modules() if hasattr(s, "adapters")
    }.keys() == forwards.keys()


def test_cross_entropy_on_padded_logits_is_each_tasks_own_loss():
    model = many_task_model()
    names = ["trec", "sst2", "trec", "subj", "cr"]
    labels = torch.tensor([5, 1, 0, 2, 1])
    batch = make_batch(len(names))
    output = mixed_forward(model, names, **batch)
    own = [F.cross_entropy(output.example_logits(i)[None], labels[i : i + 1]) for i in range(len(names))]
    torch.testing.assert_close(F.cross_entropy(output.logits, labels), torch.stack(own).mean())


def test_gradients_reach_every_trainable_adapter_of_the_batch():
    model = many_task_model()
    for path, parameter in model.named_parameters():  # train two tasks together: both adapters trainable
        parameter.requires_grad_(".sst2." in f".{path}." or ".trec." in f".{path}.")
    output = mixed_forward(model, ["sst2", "trec", "sst2"], **make_batch(3))
    F.cross_entropy(output.logits, torch.tensor([0, 4, 1])).backward()
    grads = {path: p.grad for path, p in model.named_parameters() if p.requires_grad}
    assert any(".sst2." in f".{k}." and g is not None and g.abs().sum() > 0 for k, g in grads.items())
    assert any(".trec." in f".{k}." and g is not None and g.abs().sum() > 0 for k, g in grads.items())


def test_one_task_in_the_whole_batch_is_the_plain_forward():
    model = many_task_model()
    batch = make_batch(5)
    with torch.no_grad():
        output = mixed_forward(model, ["trec"] * 5, **batch)
    torch.testing.assert_close(output.logits, alone(model, "trec", batch, list(range(5))), atol=0, rtol=0)


def test_prefix_tuning_is_refused_with_its_reason():
    model = many_task_model(
        {"sst2": LoraConfig(task_type=SEQ_CLS), "nli": PrefixTuningConfig(task_type=SEQ_CLS)}
    )
    with pytest.raises(
        ValueError, match=r"adapter 'nli' cannot share a batch .*prefix tuning .* keys and values"
    ):
        mixed_forward(model, ["sst2", "nli"], **make_batch(2))
    with torch.no_grad():  # a prefix adapter on the model but not in the batch is no obstacle
        output = mixed_forward(model, ["sst2", "sst2"], **make_batch(2))
    torch.testing.assert_close(output.logits, alone(model, "sst2", make_batch(2), [0, 1]), atol=0, rtol=0)


def test_merged_weights_are_refused():
    model = many_task_model({"sst2": LoraConfig(task_type=SEQ_CLS), "cr": LoraConfig(task_type=SEQ_CLS)})
    model.merge_adapter()
    with pytest.raises(
        RuntimeError, match=r"merged into the weights, which every example .* unmerge_adapter"
    ):
        mixed_forward(model, ["sst2", "cr"], **make_batch(2))


@pytest.mark.parametrize(
    "names, error, message",
    [
        (["sst2", "nope"], ValueError, r"no adapter named 'nope'; this model has: sst2, cr"),
        (["sst2"], ValueError, r"names 1 adapters for a batch of 2 examples"),
        ("sst2", TypeError, r"one adapter name per example"),
        ([], TypeError, r"one adapter name per example"),
    ],
)
def test_bad_adapter_names(names, error, message):
    model = many_task_model({"sst2": LoraConfig(task_type=SEQ_CLS), "cr": LoraConfig(task_type=SEQ_CLS)})
    with refused_unchanged(model, error, message):
        mixed_forward(model, names, **make_batch(2))


def test_labels_and_headless_adapters_are_refused():
    model = many_task_model({"sst2": LoraConfig(task_type=SEQ_CLS), "plain": LoraConfig()})
    with pytest.raises(ValueError, match=r"takes no labels"):
        mixed_forward(model, ["sst2", "sst2"], labels=torch.tensor([0, 1]), **make_batch(2))
    with pytest.raises(ValueError, match=r"adapter 'plain' has no classification head"):
        mixed_forward(model, ["sst2", "plain"], **make_batch(2))


def test_routes_are_undone_after_an_error():
    model = many_task_model({"sst2": LoraConfig(task_type=SEQ_CLS), "cr": LoraConfig(task_type=SEQ_CLS)})
    with pytest.raises(RuntimeError), routed(model, ["sst2", "cr"]):
        raise RuntimeError("inside")
    assert all("forward" not in site.__dict__ for site in model.base_model.modules())


def test_set_head_checks_its_input():
    model = many_task_model({"sst2": LoraConfig(task_type=SEQ_CLS), "plain": LoraConfig()})
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer"):
        set_head(model, "sst2", 0)
    with pytest.raises(ValueError, match=r"'plain' has no classification head"):
        set_head(model, "plain", 3)
    set_head(model, "sst2", 4)  # "plain" is active: the new head stays frozen until sst2 is
    head = model.base_model.classifier.adapters["sst2"]
    assert head.out_features == 4 and not head.weight.requires_grad
    model.set_adapter("sst2")
    assert head.weight.requires_grad and head.bias.requires_grad
