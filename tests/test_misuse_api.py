"""The Python API under misuse: every mistake gets a clear error and leaves the model and files as
they were, or works correctly. Also the promises a peft user relies on (save_pretrained,
from_pretrained, load_adapter, disable_adapter, delete_adapter, merge_and_unload)."""

import json
import math
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import RobertaConfig, RobertaForSequenceClassification

from adapterlib import (
    AdapterConfig,
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    TaskType,
    get_peft_model,
    load_adapter,
    save_adapter,
)
from adapterlib.checkpoint import CONFIG_FILE, FORMAT_2_ONLY, WEIGHTS_FILE, DifferentBaseWarning, checksum
from adapterlib.methods.lora import LoraLinear
from conftest import assert_unchanged, perturbed, refused_unchanged, snapshot, tiny_classifier, tiny_config

CONFIGS = {
    "adapter": lambda: AdapterConfig(r=4, placement="houlsby", task_type=TaskType.SEQ_CLS),
    "lora": lambda: LoraConfig(
        r=4, target_modules=("query", "value", "output.dense"), task_type=TaskType.SEQ_CLS
    ),
    "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=3, init_std=1.0, task_type=TaskType.SEQ_CLS),
    "prefix-mlp": lambda: PrefixTuningConfig(
        num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8, task_type=TaskType.SEQ_CLS
    ),
}


def file_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ prefix tuning is a site


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("name", ["prefix", "prefix-mlp"])
def test_prefix_trains_under_gradient_checkpointing(name, reentrant, batch):
    gradients = []
    for checkpointing in (False, True):
        peft_model = get_peft_model(tiny_classifier(), CONFIGS[name]())
        peft_model.train()
        if checkpointing:
            peft_model.base_model.activation_checkpointing_enable({"use_reentrant": reentrant})
        torch.manual_seed(0)
        peft_model(**batch, labels=torch.tensor([0, 1])).loss.backward()
        encoder = peft_model.base_model.shared_adapters["default"]
        gradients.append({n: p.grad for n, p in encoder.named_parameters()})
    for key, reference in gradients[0].items():
        assert gradients[1][key] is not None, f"{key} got no gradient under checkpointing"
        assert reference.abs().sum() > 0
        torch.testing.assert_close(gradients[1][key], reference, rtol=1e-4, atol=1e-6)


def test_every_method_applies_when_the_original_model_object_is_called(batch):
    for name, make in CONFIGS.items():
        model = tiny_classifier()
        peft_model = perturbed(get_peft_model(model, make()))
        torch.testing.assert_close(
            model(**batch).logits, peft_model(**batch).logits, rtol=0, atol=0, msg=name
        )


def test_mlp_encoder_is_saved_once(tmp_path):
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["prefix-mlp"]())
    keys = set(peft_model.adapter_state_dict())
    assert keys == {
        "shared.embedding",
        "shared.mlp.0.weight",
        "shared.mlp.0.bias",
        "shared.mlp.2.weight",
        "shared.mlp.2.bias",
        "classifier.weight",
        "classifier.bias",
    }


# ------------------------------------------------------------------ checkpoint format


def test_keys_do_not_depend_on_what_else_is_installed(batch, tmp_path):
    """LoRA saved from a model that also carries a prefix adapter reloads on a fresh base."""
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["prefix"](), adapter_name="prefix")
    peft_model.add_adapter("lora", CONFIGS["lora"]())
    perturbed(peft_model, seed=3)
    keys = set(peft_model.adapter_state_dict("lora"))
    assert "layers.0.attention.self.query.A" in keys and not any("base_layer" in k for k in keys)
    expected = peft_model(**batch).logits
    save_adapter(peft_model, tmp_path / "lora", "lora")
    reloaded = load_adapter(tiny_classifier(), tmp_path / "lora")
    torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=0)


def test_save_pretrained_writes_only_the_adapter(tmp_path, batch):
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS["lora"]()))
    peft_model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    saved = load_file(tmp_path / WEIGHTS_FILE)
    assert set(saved) == set(peft_model.adapter_state_dict())
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert sum(t.numel() for t in saved.values()) == trainable
    reloaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path)
    assert not any(p.requires_grad for p in reloaded.parameters()), (
        "from_pretrained is for inference unless is_trainable"
    )
    torch.testing.assert_close(reloaded(**batch).logits, peft_model(**batch).logits, rtol=0, atol=0)
    trainable_again = PeftModel.from_pretrained(tiny_classifier(), tmp_path, is_trainable=True)
    assert any(p.requires_grad for p in trainable_again.parameters())


def test_save_pretrained_puts_other_adapters_in_subfolders(tmp_path, batch):
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["adapter"]())
    peft_model.add_adapter("negation", CONFIGS["lora"]())
    perturbed(peft_model)
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / "negation" / WEIGHTS_FILE).is_file()
    expected = peft_model(**batch).logits  # the active adapter: negation
    reloaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path)
    reloaded.load_adapter(tmp_path / "negation", "negation")
    assert reloaded.active_adapter == "default", "load_adapter keeps the active adapter, as in peft"
    reloaded.set_adapter("negation")
    torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=0)


def test_format_1_checkpoints_still_load(tmp_path, batch):
    """Format 1 named tensors by module path and had no fingerprint or checksum."""
    for name in ("adapter", "prefix"):
        peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS[name]()))
        folder = tmp_path / name
        save_adapter(peft_model, folder)
        meta = json.loads((folder / CONFIG_FILE).read_text())
        old_keys = {}
        for key, tensor in load_file(folder / WEIGHTS_FILE).items():
            parts = key.split(".")
            if parts[0] == "layers":
                key = ".".join(["bert", "encoder", "layer", *parts[1:]])
            elif parts[0] == "shared":
                key = ".".join(["prefix_encoder", *parts[1:]])
            old_keys[key] = tensor
        save_file(old_keys, folder / WEIGHTS_FILE)
        for field in ("format_version", *FORMAT_2_ONLY):
            del meta[field]
        (folder / CONFIG_FILE).write_text(json.dumps(meta))
        reloaded = load_adapter(tiny_classifier(), folder)
        torch.testing.assert_close(reloaded(**batch).logits, peft_model(**batch).logits, rtol=0, atol=0)


def test_another_base_of_the_same_shape_is_named_in_a_warning(tmp_path):
    save_adapter(
        get_peft_model(tiny_classifier(seed=0), CONFIGS["lora"]()), tmp_path, base_model_name="tiny-seed-0"
    )
    other = tiny_classifier(seed=1)
    with pytest.warns(
        DifferentBaseWarning,
        match="tiny-seed-0 with weights fingerprint [0-9a-f]{16}.*fingerprint [0-9a-f]{16}",
    ):
        load_adapter(other, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_adapter(tiny_classifier(seed=0), tmp_path)  # the same base: no warning


def test_a_bf16_copy_of_the_same_base_is_the_same_base(tmp_path):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_adapter(tiny_classifier().to(torch.bfloat16), tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda f: (f / WEIGHTS_FILE).write_bytes((f / WEIGHTS_FILE).read_bytes()[:100]),
            "differs from what was saved",
        ),
        (lambda f: (f / WEIGHTS_FILE).write_bytes(b""), "differs from what was saved"),
        (
            lambda f: (f / CONFIG_FILE).write_text(
                (f / CONFIG_FILE).read_text().replace('"alpha": 16.0', '"alpha": 36.0')
            ),
            "differs from what was saved",
        ),
        (
            lambda f: (f / CONFIG_FILE).write_text(
                (f / CONFIG_FILE).read_text().replace('"format_version": 2', '"format_version": "2"')
            ),
            "fields of the wrong type",
        ),
        (lambda f: (f / CONFIG_FILE).write_text("{not json"), "is not valid JSON"),
        (lambda f: (f / CONFIG_FILE).write_text("{}"), "lacks peft_config, base_model_shape"),
    ],
    ids=["truncated", "empty", "edited-alpha", "version-as-text", "corrupt-json", "no-fields"],
)
def test_damaged_checkpoints_give_clear_errors(tmp_path, damage, message):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    damage(tmp_path)
    model = tiny_classifier()
    with refused_unchanged(model, ValueError, message):
        load_adapter(model, tmp_path)


def test_a_flipped_bit_is_caught_by_the_checksum(tmp_path):
    save_adapter(perturbed(get_peft_model(tiny_classifier(), CONFIGS["lora"]())), tmp_path)
    data = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0x01
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 recorded at saving does not match"):
        load_adapter(tiny_classifier(), tmp_path)


def test_truncated_format_1_file_gives_a_clear_error(tmp_path):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    for field in ("format_version", *FORMAT_2_ONLY):  # format 1 recorded none of them
        del meta[field]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    (tmp_path / WEIGHTS_FILE).write_bytes((tmp_path / WEIGHTS_FILE).read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(tiny_classifier(), tmp_path)


def test_nan_tensors_are_refused_when_loading(tmp_path):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    next(iter(tensors.values()))[0] = math.nan
    save_file(tensors, tmp_path / WEIGHTS_FILE)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["sha256"] = checksum((tmp_path / WEIGHTS_FILE).read_bytes(), meta["peft_config"])
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_adapter(tiny_classifier(), tmp_path)


# ------------------------------------------------------------------ transactions


def test_failed_load_into_an_existing_model_changes_nothing(tmp_path, batch):
    """Tensors that do not match their config: the half-loaded adapter must not stay registered."""
    source = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    save_adapter(source, tmp_path)
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    tensors.pop(next(k for k in tensors if k.endswith(".A")))
    save_file(tensors, tmp_path / WEIGHTS_FILE)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["sha256"] = checksum((tmp_path / WEIGHTS_FILE).read_bytes(), meta["peft_config"])
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))

    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS["adapter"]()))
    before, logits = snapshot(peft_model), peft_model(**batch).logits
    with pytest.raises(ValueError, match="do not match the adapter their config describes.*missing"):
        load_adapter(peft_model, tmp_path, "second")
    assert_unchanged(peft_model, before)
    assert list(peft_model.peft_config) == ["default"] and peft_model.active_adapter == "default"
    torch.testing.assert_close(peft_model(**batch).logits, logits, rtol=0, atol=0)

    fresh = tiny_classifier()
    with refused_unchanged(fresh, ValueError, "missing"):
        load_adapter(fresh, tmp_path)


@pytest.mark.parametrize(
    "name", ["to", "train", "forward", "cuda", "state_dict", "training", "_modules", "_parameters"]
)
def test_adapter_names_that_collide_with_module_attributes(name):
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    with refused_unchanged(
        peft_model, ValueError, f"adapter name '{name}' is taken by a method of torch modules"
    ):
        peft_model.add_adapter(name, CONFIGS["adapter"]())
    fresh = tiny_classifier()
    with refused_unchanged(fresh, ValueError, "is taken"):
        get_peft_model(fresh, CONFIGS["prefix"](), adapter_name=name)
    get_peft_model(fresh, CONFIGS["prefix"]())  # the model is still fresh


def test_a_failed_insertion_leaves_no_empty_sites(monkeypatch):
    """Whatever fails half-way through inserting, the model is as before (here: the last layer fails)."""
    from adapterlib.methods.lora import LoraUpdate

    calls = {"n": 0}
    original = LoraUpdate.__init__

    def fail_late(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("out of memory")
        original(self, *args, **kwargs)

    monkeypatch.setattr(LoraUpdate, "__init__", fail_late)
    model = tiny_classifier()
    with refused_unchanged(model, RuntimeError, "out of memory"):
        get_peft_model(model, CONFIGS["lora"]())


def test_adding_while_merged_is_refused_before_inserting():
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS["lora"]()))
    peft_model.merge_adapter()
    before = snapshot(peft_model)
    with pytest.raises(
        RuntimeError, match="merged into the weights; call unmerge_adapter\\(\\) before adding"
    ):
        peft_model.add_adapter("second", CONFIGS["adapter"]())
    assert_unchanged(peft_model, before)


def test_changing_b_while_merged_then_unmerging_restores_w():
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS["lora"]()))
    site = next(m for m in peft_model.modules() if isinstance(m, LoraLinear))
    original = site.base_layer.weight.clone()
    peft_model.merge_adapter()
    with torch.no_grad():
        site.adapters["default"].B.add_(1.0)
    peft_model.unmerge_adapter()
    torch.testing.assert_close(site.base_layer.weight, original, rtol=0, atol=1e-6)


def test_save_failure_leaves_the_existing_checkpoint_intact(tmp_path):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    before = file_bytes(tmp_path)
    broken = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    with torch.no_grad():
        next(p for p in broken.parameters() if p.requires_grad).fill_(math.nan)
    with pytest.raises(ValueError, match="NaN or infinite values.*Nothing was saved"):
        save_adapter(broken, tmp_path)
    assert file_bytes(tmp_path) == before


def test_a_bad_base_model_name_fails_before_any_file_is_written(tmp_path):
    from pathlib import Path

    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    before = file_bytes(tmp_path)
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS["lora"]()))
    with pytest.raises(TypeError, match="base_model_name is a portable name"):
        peft_model.save_pretrained(tmp_path, base_model_name=Path("models/bert"))
    assert file_bytes(tmp_path) == before


def test_save_pretrained_writes_every_adapter_or_none(tmp_path):
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    peft_model.add_adapter("second", CONFIGS["adapter"]())
    peft_model.save_pretrained(tmp_path)
    before = file_bytes(tmp_path), file_bytes(tmp_path / "second")
    perturbed(peft_model)  # the active adapter, "second", changes...
    peft_model.set_adapter("default")
    with torch.no_grad():
        next(p for p in peft_model.parameters() if p.requires_grad).fill_(math.nan)  # ...and "default" breaks
    with pytest.raises(ValueError, match="'default' holds NaN"):
        peft_model.save_pretrained(tmp_path)
    assert (file_bytes(tmp_path), file_bytes(tmp_path / "second")) == before


def test_roberta_adapters_save_and_load(tmp_path, batch):
    """RoBERTa's head is a dense layer and a projection, not a single Linear."""
    config = tiny_config(config_class=RobertaConfig, max_position_embeddings=70)  # positions start at 2
    torch.manual_seed(0)
    peft_model = perturbed(get_peft_model(RobertaForSequenceClassification(config).eval(), CONFIGS["lora"]()))
    save_adapter(peft_model, tmp_path)
    torch.manual_seed(0)
    reloaded = load_adapter(RobertaForSequenceClassification(config).eval(), tmp_path)
    inputs = {k: v + 2 * (k == "input_ids") for k, v in batch.items()}  # RoBERTa's padding id is 1
    torch.testing.assert_close(reloaded(**inputs).logits, peft_model(**inputs).logits, rtol=0, atol=0)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: AdapterConfig(alpha=0), ValueError, "alpha must be a finite number > 0, got 0"),
        (lambda: AdapterConfig(alpha=math.nan), ValueError, "alpha must be a finite number > 0, got nan"),
        (lambda: LoraConfig(alpha=-1.0), ValueError, "alpha must be a finite number > 0"),
        (lambda: LoraConfig(alpha=math.inf), ValueError, "alpha must be a finite number > 0, got inf"),
        (lambda: LoraConfig(alpha="16"), TypeError, "alpha must be a number, got str '16'"),
        (lambda: PrefixTuningConfig(init_std=math.nan), ValueError, "init_std must be a finite number > 0"),
        (
            lambda: LoraConfig(target_modules=[None]),
            TypeError,
            "target_modules must be names of Linear layers",
        ),
        (lambda: LoraConfig(dropout="0.1"), TypeError, "dropout must be a number"),
        (lambda: AdapterConfig(bias="yes"), TypeError, "bias must be True or False"),
        (
            lambda: PrefixTuningConfig(prefix_projection=1),
            TypeError,
            "prefix_projection must be True or False",
        ),
    ],
)
def test_bad_values_are_refused_when_the_config_is_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_config_changed_after_it_was_made_is_checked_again():
    config = LoraConfig()
    config.alpha = "16"  # dataclasses do not check assignments
    model = tiny_classifier()
    with refused_unchanged(model, TypeError, "alpha must be a number"):
        get_peft_model(model, config)


def test_adapter_alpha_defaults_to_r():
    """Scaling 1 at every size, so sizes compare r alone (LoRA keeps a fixed alpha, as in peft)."""
    for r in (4, 16, 32):
        peft_model = get_peft_model(tiny_classifier(), AdapterConfig(r=r))
        adapter = next(m for m in peft_model.modules() if type(m).__name__ == "BottleneckAdapter")
        assert adapter.scaling == 1.0
    config = AdapterConfig()
    config.r = 4  # changed after it was made: the scaling still follows r
    adapter = next(
        m
        for m in get_peft_model(tiny_classifier(), config).modules()
        if type(m).__name__ == "BottleneckAdapter"
    )
    assert adapter.scaling == 1.0
    assert LoraConfig(r=4).alpha == LoraConfig(r=64).alpha == 16.0


def test_a_config_reused_for_a_second_adapter_does_not_change_the_first(tmp_path, batch):
    config = CONFIGS["lora"]()
    peft_model = perturbed(get_peft_model(tiny_classifier(), config))
    config.r = 2
    peft_model.add_adapter("small", config)
    assert peft_model.peft_config["default"].r == 4 and peft_model.peft_config["small"].r == 2
    peft_model.set_adapter("default")
    save_adapter(peft_model, tmp_path)
    torch.testing.assert_close(
        load_adapter(tiny_classifier(), tmp_path)(**batch).logits, peft_model(**batch).logits
    )


def test_task_type_given_as_text_after_the_config_was_made(tmp_path):
    config = LoraConfig()
    config.task_type = "SEQ_CLS"
    save_adapter(get_peft_model(tiny_classifier(), config), tmp_path)
    config.task_type = "bogus"
    with pytest.raises(ValueError, match="task_type 'bogus' is not known"):
        get_peft_model(tiny_classifier(), config)


def test_peft_configs_and_names_get_a_pointer_to_adapterlib():
    import peft

    with pytest.raises(
        TypeError,
        match="got LoraConfig \\(peft's class; adapterlib has its own: from adapterlib import LoraConfig\\)",
    ):
        get_peft_model(tiny_classifier(), peft.LoraConfig())
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    for name, hint in (
        ("disable_adapters", "disable_adapter"),
        ("active_adapters", "active_adapter"),
        ("get_adapter_state_dict", "adapter_state_dict"),
    ):
        with pytest.raises(AttributeError, match=f"PeftModel has no {name}; use .*{hint}"):
            getattr(peft_model, name)
    with pytest.raises(TypeError, match="selected_adapters is a list of names"):
        peft_model.save_pretrained("unused", selected_adapters="default")
    with pytest.raises(TypeError, match="an adapter is named by one string"):
        peft_model.set_adapter(["default"])


def test_peft_model_on_an_adapted_base_is_refused():
    model = tiny_classifier()
    get_peft_model(model, CONFIGS["lora"]())
    with refused_unchanged(model, ValueError, "already carries adapterlib modules"):
        PeftModel(model, CONFIGS["adapter"](), "other")


def test_load_adapter_keeps_an_inference_model_frozen(tmp_path):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    peft_model = PeftModel.from_pretrained(tiny_classifier(), tmp_path)
    peft_model.load_adapter(tmp_path, "second")
    assert not any(p.requires_grad for p in peft_model.parameters())


def test_another_embedding_table_is_another_base(tmp_path):
    save_adapter(get_peft_model(tiny_classifier(), CONFIGS["lora"]()), tmp_path)
    other = tiny_classifier()
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight.add_(0.01)
    with pytest.warns(DifferentBaseWarning):
        load_adapter(other, tmp_path)


# ------------------------------------------------------------------ peft's switches


def test_disable_adapter_computes_the_base_model(batch):
    model = tiny_classifier()
    base_logits = model(**batch).logits
    for name, make in CONFIGS.items():
        model = tiny_classifier()
        peft_model = perturbed(get_peft_model(model, make()))
        adapted = peft_model(**batch).logits
        with peft_model.disable_adapter():
            torch.testing.assert_close(peft_model(**batch).logits, base_logits, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(peft_model(**batch).logits, adapted, rtol=0, atol=0, msg=name)


def test_delete_adapter_restores_the_base_modules(batch):
    model = tiny_classifier()
    before = snapshot(model)
    peft_model = get_peft_model(model, CONFIGS["prefix"](), adapter_name="first")
    peft_model.add_adapter("second", CONFIGS["lora"]())
    peft_model.delete_adapter("second")
    assert peft_model.active_adapter == "first"
    peft_model.delete_adapter("first")
    assert peft_model.active_adapter is None
    structure, values, _ = snapshot(model)
    assert structure == before[0] and all(torch.equal(values[k], before[1][k]) for k in values)
    with pytest.raises(ValueError, match="no adapter named 'first'; this model has: none"):
        peft_model.set_adapter("first")


def test_merge_and_unload_keeps_the_logits_and_removes_every_module(batch):
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS["lora"]()))
    peft_model.add_adapter("other", CONFIGS["adapter"]())
    peft_model.set_adapter("default")
    expected = peft_model(**batch).logits
    plain = peft_model.merge_and_unload()
    assert type(plain).__name__ == "BertForSequenceClassification"
    assert not any("adapters" in name or "base_layer" in name for name, _ in plain.named_modules())
    torch.testing.assert_close(plain(**batch).logits, expected, rtol=1e-5, atol=1e-6)


def test_merging_refuses_methods_that_do_not_merge_and_a_disabled_model():
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["adapter"]())
    before = snapshot(peft_model)
    for merge in (peft_model.merge_and_unload, peft_model.merge_adapter):
        with pytest.raises(ValueError, match="cannot be folded into the base weights"):
            merge()
    assert_unchanged(peft_model, before)
    lora = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    with lora.disable_adapter(), pytest.raises(RuntimeError, match="inside disable_adapter"):
        lora.merge_adapter()
    lora.merge_adapter()
    with pytest.raises(RuntimeError, match="call unmerge_adapter\\(\\) before merging again"):
        lora.merge_adapter()


def test_unload_returns_the_base_model_unchanged(batch):
    model = tiny_classifier()
    logits = model(**batch).logits
    peft_model = perturbed(get_peft_model(model, CONFIGS["prefix"]()))
    assert peft_model.unload() is model
    torch.testing.assert_close(model(**batch).logits, logits, rtol=0, atol=0)


# ------------------------------------------------------------------ dtype


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_bf16_base_trains_and_infers(name, batch):
    model = tiny_classifier().to(torch.bfloat16)
    peft_model = get_peft_model(model, CONFIGS[name]())
    assert all(p.dtype == torch.bfloat16 for p in peft_model.parameters() if p.requires_grad)
    peft_model.train()
    loss = peft_model(**batch, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(p.grad is not None for p in peft_model.parameters() if p.requires_grad)
    assert torch.isfinite(loss)


def test_modules_are_created_where_the_base_is(batch):
    """On the meta device (shapes without memory) the inserted modules land on meta too."""
    with torch.device("meta"):
        from transformers import BertForSequenceClassification

        model = BertForSequenceClassification(tiny_config())
    with torch.device("cpu"):
        peft_model = get_peft_model(model, CONFIGS["lora"]())
    assert all(p.is_meta for p in peft_model.parameters())


# ------------------------------------------------------------------ what is passed in


@pytest.mark.parametrize("name", ["adapter", "lora", "prefix", "ia3"])
def test_a_model_wrapped_by_peft_is_refused_for_every_method(name):
    import peft

    from adapterlib.methods.ia3 import IA3Config

    config = IA3Config() if name == "ia3" else CONFIGS[name]()
    wrapped = peft.get_peft_model(tiny_classifier(), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    before = snapshot(wrapped)
    for model in (wrapped, wrapped.base_model.model):  # peft's wrapper, and the model holding its layers
        with pytest.raises(ValueError, match="already wrapped by peft; pass the base model"):
            get_peft_model(model, config)
    assert_unchanged(wrapped, before)


@pytest.mark.parametrize("model", [None, "bert-base-uncased"])
def test_something_other_than_a_module_is_refused(model):
    with pytest.raises(TypeError, match=r"expected a torch nn.Module \(a Hugging Face BERT model"):
        get_peft_model(model, CONFIGS["lora"]())


def test_merging_with_every_adapter_deleted_says_none_is_active():
    peft_model = get_peft_model(tiny_classifier(), CONFIGS["lora"]())
    peft_model.delete_adapter("default")
    for merge in (peft_model.merge_adapter, peft_model.merge_and_unload):
        with pytest.raises(ValueError, match="no adapter is active; add or load one first"):
            merge()


@pytest.mark.parametrize("guess", ["4/7", None, [0.5]])
def test_a_guess_that_is_not_a_number_is_sent_back(guess, capsys):
    from adapterlib.exercises import compare_prediction

    assert compare_prediction(guess, 0.571, tolerance=0.01) is False
    out = capsys.readouterr().out
    assert "your guess should be a plain number" in out.lower()
    assert "0.571" not in out  # the measurement stays hidden until there is a guess
    assert compare_prediction("0.57", 0.571, tolerance=0.01) is True
    capsys.readouterr()
    compare_prediction(guess, 77.4, tolerance=5, unit="%")
    assert "a plain number (in %)" in capsys.readouterr().out
