"""``with model.disable_adapter():`` means the base model alone, whatever is called inside the block."""

import inspect

import pytest
import torch

from adapterlib import LoraConfig, PeftModel, TaskType, get_peft_model, save_adapter
from conftest import assert_unchanged, perturbed, snapshot, tiny_classifier


def two_adapters() -> PeftModel:
    """Adapters "a" (active) and "b", both moved from their start, on the seed-0 tiny BERT."""
    peft_model = get_peft_model(tiny_classifier(), LoraConfig(r=4, task_type=TaskType.SEQ_CLS), "a")
    perturbed(peft_model, seed=1)
    peft_model.add_adapter("b", LoraConfig(r=2, task_type=TaskType.SEQ_CLS))
    perturbed(peft_model, seed=2)
    peft_model.set_adapter("a")
    return peft_model


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def test_nested_blocks_restore_what_each_found(batch):
    peft_model = two_adapters()
    base, adapted = logits(tiny_classifier(), batch), logits(peft_model, batch)
    assert not torch.allclose(base, adapted)
    with peft_model.disable_adapter():
        with peft_model.disable_adapter():
            assert torch.equal(logits(peft_model, batch), base)
        assert torch.equal(logits(peft_model, batch), base)  # still disabled: the outer block goes on
        assert peft_model.disabled
    assert not peft_model.disabled
    assert torch.equal(logits(peft_model, batch), adapted)


def test_an_error_inside_the_block_restores_the_adapter(batch):
    peft_model = two_adapters()
    adapted = logits(peft_model, batch)
    with pytest.raises(KeyError), peft_model.disable_adapter():
        raise KeyError("inside")
    assert torch.equal(logits(peft_model, batch), adapted)


def nested_block(peft_model: PeftModel) -> None:
    with peft_model.disable_adapter():
        pass


def calls(peft_model: PeftModel, tmp_path) -> dict:
    """One call of every public method and property of PeftModel, as a user might make it."""
    save_adapter(peft_model, tmp_path / "saved", adapter_name="b")
    return {
        "add_adapter": lambda: peft_model.add_adapter("c", LoraConfig(task_type=TaskType.SEQ_CLS)),
        "delete_adapter": lambda: peft_model.delete_adapter("a"),
        "set_adapter": lambda: peft_model.set_adapter("b"),
        "load_adapter": lambda: peft_model.load_adapter(tmp_path / "saved", "c", is_trainable=True),
        "merge_adapter": peft_model.merge_adapter,
        "merge_and_unload": peft_model.merge_and_unload,
        "unload": peft_model.unload,
        "unmerge_adapter": peft_model.unmerge_adapter,
        "disable_adapter": lambda: nested_block(peft_model),
        "active_config": lambda: peft_model.active_config,
        "sites": lambda: peft_model.sites(torch.nn.Module),
        "adapter_state_dict": lambda: peft_model.adapter_state_dict("b"),
        "save_pretrained": lambda: peft_model.save_pretrained(tmp_path / "inside"),
        "from_pretrained": lambda: PeftModel.from_pretrained(tiny_classifier(), tmp_path / "saved"),
        "get_base_model": peft_model.get_base_model,
        "print_trainable_parameters": peft_model.print_trainable_parameters,
        "forward": lambda: peft_model.forward(input_ids=torch.tensor([[1, 2, 3]])),
    }


REFUSED = [  # they change which adapter runs or fold it into the weights
    "add_adapter",
    "delete_adapter",
    "set_adapter",
    "load_adapter",
    "merge_adapter",
    "merge_and_unload",
    "unload",
]
METHODS = REFUSED + [
    "unmerge_adapter",
    "disable_adapter",
    "active_config",
    "sites",
    "adapter_state_dict",
    "save_pretrained",
    "from_pretrained",
    "get_base_model",
    "print_trainable_parameters",
    "forward",
]


def test_every_public_method_is_covered(tmp_path):
    public = {
        name
        for name, member in vars(PeftModel).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, (property, classmethod)))
    }
    assert public == set(METHODS) == set(calls(two_adapters(), tmp_path))


@pytest.mark.parametrize("method", METHODS)
def test_inside_the_block_only_the_base_model_runs(method, batch, tmp_path, capsys):
    peft_model = two_adapters()
    base, adapted = logits(tiny_classifier(), batch), logits(peft_model, batch)
    call = calls(peft_model, tmp_path)[method]
    before = snapshot(peft_model)
    with peft_model.disable_adapter():
        if method in REFUSED:
            with pytest.raises(RuntimeError, match="disable_adapter"):
                call()
        else:
            call()
        assert torch.equal(logits(peft_model, batch), base)
    assert_unchanged(peft_model, before)
    assert torch.equal(logits(peft_model, batch), adapted)
