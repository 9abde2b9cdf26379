"""Bad input raises a clear error and leaves the model exactly as it was."""

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from adapterlib import AdapterConfig, LoraConfig, PrefixTuningConfig, TaskType, get_peft_model, load_adapter
from adapterlib.toy import ToyTransformerLayer
from conftest import assert_unchanged, refused_unchanged, snapshot, tiny_classifier, tiny_encoder


@pytest.mark.parametrize(
    "make",
    [lambda: AdapterConfig(r=0), lambda: LoraConfig(r=-2), lambda: PrefixTuningConfig(num_virtual_tokens=0)],
)
def test_non_positive_sizes_are_rejected(make):
    with pytest.raises(ValueError, match="positive integer"):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: AdapterConfig(r=2.5), "must be an int"),
        (lambda: AdapterConfig(placement="middle"), "houlsby, pfeiffer"),
        (lambda: AdapterConfig(position="inside"), "after_layer_norm, before_layer_norm"),
        (lambda: AdapterConfig(activation="swish"), "relu, gelu"),
        (lambda: LoraConfig(dropout=1.5), "dropout"),
        (lambda: LoraConfig(target_modules=()), "target_modules is empty"),
        (lambda: LoraConfig(task_type="TOKEN_GEN"), "SEQ_CLS"),
    ],
)
def test_bad_config_values_are_rejected(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize(
    "config, error, message",
    [
        (AdapterConfig(r=33), ValueError, r"r=33 is larger than the hidden size \(32\)"),
        (
            LoraConfig(r=40),
            ValueError,
            r"r=40 is larger than the smaller side of attention.self.query \(32\)",
        ),
        (
            LoraConfig(target_modules=("query", "qkv_proj")),
            ValueError,
            r"\['qkv_proj'\] match no Linear.*attention.self.query",
        ),
        (
            {"r": 8},
            TypeError,
            r"expected a PEFT config \(AdapterConfig, .*LoraConfig, .*PrefixTuningConfig\), got dict",
        ),
    ],
)
def test_bad_configs_for_this_model_leave_it_unchanged(config, error, message):
    model = tiny_classifier()
    with refused_unchanged(model, error, message):
        get_peft_model(model, config)


@pytest.mark.parametrize(
    "make_model",
    [lambda: GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=4)), lambda: ToyTransformerLayer(d_model=32)],
    ids=["gpt2", "tutorial-toy-layer"],
)
def test_unsupported_model_family(make_model):
    model = make_model()
    with refused_unchanged(
        model, TypeError, "not a supported model family: adapterlib inserts into BERT-family"
    ):
        get_peft_model(model, LoraConfig())


def test_seq_cls_needs_a_classifier():
    model = tiny_encoder()
    with refused_unchanged(model, ValueError, "needs a model with a `classifier` head"):
        get_peft_model(model, AdapterConfig(task_type=TaskType.SEQ_CLS))


@pytest.mark.parametrize("second", [AdapterConfig(), LoraConfig()], ids=["adapter", "lora"])
def test_applying_a_method_twice_is_refused(second):
    model = tiny_classifier()
    peft_model = get_peft_model(model, AdapterConfig(task_type=TaskType.SEQ_CLS))
    before = snapshot(model)
    for target in (model, peft_model):
        with pytest.raises(ValueError, match="already carries adapterlib modules.*add_adapter"):
            get_peft_model(target, second)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="exists already"):
        peft_model.add_adapter("default", second)
    with pytest.raises(ValueError, match="not valid"):
        peft_model.add_adapter("my adapter", second)
    assert_unchanged(model, before)


def test_missing_or_incomplete_checkpoint(tmp_path):
    model = tiny_classifier()
    before = snapshot(model)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(model, tmp_path / "nowhere")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="incomplete: adapter_model.safetensors missing"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_checkpoint_from_another_shape(tmp_path):
    from adapterlib import save_adapter

    save_adapter(get_peft_model(tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS)), tmp_path)
    for other in (
        tiny_classifier(hidden_size=48),
        tiny_classifier(num_hidden_layers=3),
        tiny_classifier(num_labels=5),
    ):
        with refused_unchanged(other, ValueError, "trained on a base model of another shape"):
            load_adapter(other, tmp_path)
    assert torch.is_tensor(load_adapter(tiny_classifier(), tmp_path).base_model.classifier.active.weight)


def test_adapter_after_layer_norm_needs_a_layer_norm():
    model = tiny_classifier()
    del model.bert.encoder.layer[1].output.LayerNorm  # a layer laid out without a post-LayerNorm
    with refused_unchanged(
        model, TypeError, "position='after_layer_norm' needs a `LayerNorm`.*before_layer_norm"
    ):
        get_peft_model(model, AdapterConfig())
