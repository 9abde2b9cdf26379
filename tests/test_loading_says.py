"""Loading says what it did, or why not: a base without weights, a file for a folder, no folder,
a classifier's adapter on a bare encoder. A base cast to another dtype is the same base."""

import warnings

import pytest
import torch
from transformers import BertForSequenceClassification

from adapterlib import LoraConfig, PeftModel, TaskType, get_peft_model, load_adapter
from adapterlib.checkpoint import DifferentBaseWarning
from conftest import perturbed, refused_unchanged, tiny_classifier, tiny_config, tiny_encoder


@pytest.fixture
def saved(tmp_path):
    peft_model = perturbed(get_peft_model(tiny_classifier(), LoraConfig(r=2, task_type=TaskType.SEQ_CLS)))
    peft_model.save_pretrained(tmp_path)
    return tmp_path


def meta_classifier() -> BertForSequenceClassification:
    with torch.device("meta"):
        return BertForSequenceClassification(tiny_config())


def test_a_meta_device_base_is_refused_for_loading(saved):
    base = meta_classifier()
    before = repr(base)
    with pytest.raises(ValueError, match="meta device.*load the weights first"):
        load_adapter(base, saved)
    assert repr(base) == before


def test_a_meta_device_model_is_refused_for_saving(tmp_path):
    peft_model = get_peft_model(meta_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS))
    with pytest.raises(ValueError, match="meta device"):
        peft_model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "where, error, message",
    [
        (lambda folder: folder / "adapter_model.safetensors", ValueError, "give the folder, not the file"),
        (lambda folder: folder / "adapter_config.json", ValueError, "give the folder, not the file"),
        (lambda folder: None, TypeError, "named by its folder"),
        (lambda folder: 3, TypeError, "named by its folder"),
        (lambda folder: folder / "absent", FileNotFoundError, "does not exist"),
    ],
    ids=["weights file", "config file", "None", "number", "absent"],
)
def test_where_to_load_from_is_checked(saved, where, error, message):
    base = tiny_classifier()
    with refused_unchanged(base, error, message):
        PeftModel.from_pretrained(base, where(saved))


def test_a_classifier_adapter_on_a_bare_encoder_says_what_to_load_instead(saved):
    encoder = tiny_encoder()
    with refused_unchanged(
        encoder, ValueError, r"BertModel has none.*BertForSequenceClassification.*num_labels=2"
    ):
        PeftModel.from_pretrained(encoder, saved)


@pytest.mark.parametrize(
    "saved_dtype, loaded_dtype", [(torch.float32, torch.float16), (torch.float16, torch.float32)]
)
def test_another_dtype_of_the_same_base_does_not_warn(tmp_path, saved_dtype, loaded_dtype):
    config = LoraConfig(r=2, task_type=TaskType.SEQ_CLS)
    get_peft_model(tiny_classifier().to(saved_dtype), config).save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DifferentBaseWarning)
        load_adapter(tiny_classifier().to(loaded_dtype), tmp_path)
    with pytest.warns(DifferentBaseWarning):  # other weights in that dtype still warn
        load_adapter(tiny_classifier(seed=1).to(loaded_dtype), tmp_path)
