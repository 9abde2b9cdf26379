"""The graders of notebook 3: right answers pass, typical mistakes are named, templates fall back."""

import numpy as np
import pytest
import torch

from adapterlib import AdapterConfig, TaskType, get_peft_model
from adapterlib.exercises import NotYet, check, grade, grade_reference
from adapterlib.exercises.nb03 import houlsby_parameters, reference_compute_metrics, reference_predict_with
from adapterlib.train import accuracy_metric
from conftest import tiny_classifier


def logits_of(eval_pred) -> np.ndarray:
    predictions = eval_pred.predictions
    return predictions[0] if isinstance(predictions, tuple) else predictions


def right_metrics(eval_pred):
    return {"accuracy": float((logits_of(eval_pred).argmax(-1) == eval_pred.label_ids).mean())}


def argmax_over_examples(eval_pred):
    return {"accuracy": float((logits_of(eval_pred).argmax(0) == eval_pred.label_ids).mean())}


def returns_a_float(eval_pred):
    return float((logits_of(eval_pred).argmax(-1) == eval_pred.label_ids).mean())


def compares_probabilities(eval_pred):
    logits = logits_of(eval_pred)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"accuracy": float((probabilities.max(-1) == eval_pred.label_ids).mean())}


def ignores_tuples(eval_pred):
    return {"accuracy": float((eval_pred.predictions.argmax(-1) == eval_pred.label_ids).mean())}


def metrics_template(eval_pred):
    raise NotImplementedError("return {'accuracy': ...}")


def test_right_compute_metrics_passes():
    assert "accuracy" in grade("3.metrics", right_metrics)
    assert "accuracy" in grade_reference("3.metrics")


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        (argmax_over_examples, "axis 0"),
        (returns_a_float, "needs a dict"),
        (compares_probabilities, "not the logits or probabilities"),
        (ignores_tuples, "predictions is a tuple"),
    ],
)
def test_metric_mistakes_are_named(mistake, named):
    with pytest.raises(NotYet, match=named):
        grade("3.metrics", mistake)


def test_package_metric_is_refused():
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("3.metrics", accuracy_metric)


def test_unanswered_metrics_fall_back_to_reference(capsys):
    assert check("3.metrics", metrics_template) is reference_compute_metrics
    assert "Not answered yet" in capsys.readouterr().out


@pytest.fixture
def two_adapters():
    """A tiny BERT with adapters 'default' and 'negation' that differ (random up-projections), in train mode."""
    model = get_peft_model(tiny_classifier(), AdapterConfig(task_type=TaskType.SEQ_CLS, r=4, dropout=0.1))
    model.add_adapter("negation", AdapterConfig(task_type=TaskType.SEQ_CLS, r=4, dropout=0.1))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapters." in name:
                parameter.normal_(0, 0.5)
    model.set_adapter("default")
    return model.train()


def right_switch(model, adapter_name, batch):
    model.set_adapter(adapter_name)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def forgets_to_switch(model, adapter_name, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def stays_in_train_mode(model, adapter_name, batch):
    model.set_adapter(adapter_name)
    with torch.no_grad():
        return model(**batch).logits


def keeps_the_graph(model, adapter_name, batch):
    model.set_adapter(adapter_name)
    model.eval()
    return model(**batch).logits


def switch_template(model, adapter_name, batch):
    raise NotImplementedError("switch, eval, no_grad, logits")


def test_right_switch_passes_and_leaves_the_model_as_it_was(two_adapters):
    assert "'negation'" in grade("3.switch", (right_switch, two_adapters))
    assert two_adapters.active_adapter == "default" and two_adapters.training


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        (forgets_to_switch, "did not switch"),
        (stays_in_train_mode, "train mode"),
        (keeps_the_graph, "no_grad"),
    ],
)
def test_switch_mistakes_are_named(two_adapters, mistake, named):
    with pytest.raises(NotYet, match=named):
        grade("3.switch", (mistake, two_adapters))


def test_switch_needs_two_adapters():
    one = get_peft_model(tiny_classifier(), AdapterConfig(task_type=TaskType.SEQ_CLS, r=4))
    with pytest.raises(NotYet, match="at least two"):
        grade("3.switch", (right_switch, one))


def test_unanswered_switch_falls_back_to_reference(two_adapters, capsys):
    assert check("3.switch", (switch_template, two_adapters))[0] is reference_predict_with
    assert "Not answered yet" in capsys.readouterr().out


def test_houlsby_count_and_slips():
    right = houlsby_parameters()
    assert (
        right == 6 * 2 * (2 * 384 * 8 + 384 + 8) + 384 * 2 + 2
    )  # the packaged MiniLM-L6: d = 384, 6 layers; r = 8
    assert "trainable parameters" in grade("3.houlsby", right)
    with pytest.raises(NotYet, match="Pfeiffer"):
        grade("3.houlsby", 6 * (2 * 384 * 8 + 384 + 8) + 770)
    with pytest.raises(NotYet, match="head"):
        grade("3.houlsby", right - 770)
    with pytest.raises(NotYet, match="r = 16, the model above"):
        grade("3.houlsby", 6 * 2 * (2 * 384 * 16 + 384 + 16) + 770)
    with pytest.raises(NotYet, match="too high"):
        grade("3.houlsby", right + 1)
