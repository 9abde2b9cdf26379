r"""Notebook 3 (SST-2 with adapters): the Trainer's metric, switching task adapters, a parameter count.

* ``3.metrics``: a function ``compute_metrics(eval_pred)`` for the Hugging Face ``Trainer``. It gets an
  ``EvalPrediction`` whose ``predictions`` are logits of shape (examples, classes), or a tuple whose first
  element is the logits, and whose ``label_ids`` are class ids; it returns ``{"accuracy": a}`` with
  :math:`a = \frac{1}{N}\sum_i [\arg\max_c z_{ic} = y_i]`.
* ``3.switch``: a function ``predict_with(model, adapter_name, batch)`` that makes ``adapter_name`` the
  active adapter of a PeftModel and returns the logits of the tokenised ``batch`` at inference: eval mode
  (no dropout), no gradient graph. Handed in as the pair ``(predict_with, model)``, the model it is graded
  on; skipped, it falls back to the pair ``(reference_predict_with, None)``.
* ``3.houlsby``: the trainable parameter count with Houlsby placement (two adapters per layer), r = 8, and
  a 2-class head: :math:`2L(2dr + d + r) + 2d + 2`.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, EvalPrediction

from ..modeling import model_location, resolve_model_name
from ..peft_model import PeftModel
from ..train import accuracy_metric
from . import NotYet, exercise
from .contract import describe_error


def reference_compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """Accuracy of the argmax over the last (class) axis; the logits are the first element of a tuple."""
    logits = eval_pred.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(eval_pred.label_ids)).mean())}


def _accuracy_of(compute_metrics: Callable, eval_pred: EvalPrediction, case: str) -> float:
    """Call the learner's function on one case; the number under "accuracy", or NotYet saying what went wrong."""
    try:
        metrics = compute_metrics(copy.deepcopy(eval_pred))
    except (NotImplementedError, NotYet):
        raise
    except Exception as error:  # the learner's code failed on this input: name the input and the error
        hint = (
            "; compare one predicted class id per sentence (the argmax over the classes) with the labels"
            if "broadcast" in str(error)
            else ""
        )
        raise NotYet(f"{case}, your function raised {describe_error(error)}{hint}") from None
    if isinstance(metrics, (numbers.Real, np.ndarray, torch.Tensor)):
        raise NotYet(
            f"{case}, your function returned a {type(metrics).__name__}; the Trainer needs a dict "
            "such as {'accuracy': ...} (it logs each key as eval_<key>)."
        )
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        keys = list(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise NotYet(f"{case}, your function returned {keys}; return a dict with the key 'accuracy'.")
    value = metrics["accuracy"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NotYet(
            f"{case}, 'accuracy' is a {type(value).__name__}; make it a plain number "
            "(float(...)), which the Trainer can log."
        )
    return float(value)


def _logits_with_argmax(labels: np.ndarray, classes: int, generator: np.random.Generator) -> np.ndarray:
    """Random float32 logits whose largest entry in each row sits at ``labels[row]``."""
    logits = generator.normal(size=(len(labels), classes)).astype(np.float32)
    logits[np.arange(len(labels)), labels] = logits.max(axis=1) + 1.0
    return logits


@exercise(
    "3.metrics", kind="function", reference=lambda: reference_compute_metrics, forbidden=(accuracy_metric,)
)
def grade_metrics(compute_metrics: Callable) -> str:
    """Square logits (where the axis matters), all-right and real-shaped batches, 3 classes, tuple predictions."""
    generator = np.random.default_rng(0)

    # 3 examples, 3 classes: the argmax over examples (axis 0) has the right shape but the wrong meaning.
    labels = np.array([2, 0, 0])
    logits = np.array([[5.5, 0.5, 9.5], [4.5, 3.5, 0.5], [0.5, 2.5, 1.5]], dtype=np.float32)
    square = _accuracy_of(
        compute_metrics, EvalPrediction(predictions=logits, label_ids=labels), "on 3 sentences with 3 classes"
    )
    wrong_axis = float((logits.argmax(0) == labels).mean())  # 1/3, where the row-wise argmax scores 2/3
    if abs(square - wrong_axis) < 1e-6:
        raise NotYet(
            "on 3 sentences with 3 classes your accuracy follows the argmax over the sentences (axis 0); "
            "a prediction is the argmax over each row's classes (the last axis)."
        )

    labels = generator.integers(0, 2, size=64)
    everything_right = _accuracy_of(
        compute_metrics,
        EvalPrediction(predictions=_logits_with_argmax(labels, 2, generator), label_ids=labels),
        "on 64 sentences whose largest logit always sits at the label",
    )
    if abs(everything_right - 1.0) > 1e-6:
        raise NotYet(
            f"on 64 sentences whose largest logit always sits at the label (every prediction right) your "
            f"accuracy is {everything_right:.3g}; compare the predicted class ids (argmax of the logits) "
            "with the labels, not the logits or probabilities themselves."
        )

    cases = [
        (
            "on logits of shape (872, 2) with labels of shape (872,), as the Trainer hands them over",
            872,
            2,
            False,
        ),
        ("on 50 sentences with 3 classes", 50, 3, False),
        (
            "when predictions is a tuple (logits, hidden states), as for a model that returns more than logits",
            40,
            2,
            True,
        ),
    ]
    for case, examples, classes, as_tuple in cases:
        labels = generator.integers(0, classes, size=examples)
        logits = generator.normal(size=(examples, classes)).astype(np.float32)
        predictions = (
            (logits, generator.normal(size=(examples, 7, 4)).astype(np.float32)) if as_tuple else logits
        )
        given = _accuracy_of(compute_metrics, EvalPrediction(predictions=predictions, label_ids=labels), case)
        right = float((logits.argmax(-1) == labels).mean())
        if abs(given - right) > 1e-6:
            hint = " (the first element of the tuple is the logits)" if as_tuple else ""
            raise NotYet(f"{case}, your accuracy is off by {abs(given - right):.3g}{hint}.")
    return (
        "a dict with 'accuracy' equal to the share of right argmax predictions, "
        "also for 3 classes and tuple predictions."
    )


def reference_predict_with(
    model: nn.Module, adapter_name: str, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The logits of ``batch`` with ``adapter_name`` active, in eval mode and without a gradient graph."""
    model.set_adapter(adapter_name)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _random_batch(model: nn.Module) -> dict[str, torch.Tensor]:
    """Four token sequences of length 12 from the model's vocabulary, the last two padded after 7 tokens."""
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1, model.config.vocab_size, (4, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2:, 7:] = 0
    input_ids[2:, 7:] = 0
    return {"input_ids": input_ids.to(model.device), "attention_mask": attention_mask.to(model.device)}


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@exercise("3.switch", kind="pair", reference=lambda: (reference_predict_with, None), uses_package=True)
def grade_switch(answer: Any) -> str:
    """For each adapter, called in train mode with another adapter active: that adapter's eval-mode logits."""
    predict_with, model = answer
    if not isinstance(model, (PeftModel, __import__("peft").PeftModel)):
        raise NotYet(
            f"the second element is a {type(model).__name__}; hand in (predict_with, model) with the PeftModel "
            "that holds your adapters."
        )
    names = list(getattr(model, "peft_config", {}))
    if len(names) < 2:
        raise NotYet(
            f"the model you handed in has {len(names)} adapter(s); switching needs at least two "
            "(add the second one first)."
        )
    was_training, was_active = model.training, model.active_adapter
    batch = _random_batch(model)
    try:
        expected = {}
        for name in names:
            expected[name] = reference_predict_with(model, name, batch)
        for target in names:
            other = next(name for name in names if name != target)
            model.set_adapter(other)
            model.train()  # as after training: dropout on, until someone switches it off
            try:
                logits = predict_with(model, target, {k: v.clone() for k, v in batch.items()})
            except (NotImplementedError, NotYet):
                raise
            except Exception as error:
                raise NotYet(
                    f"asked for adapter {target!r}, your function raised {describe_error(error)}"
                ) from None
            if not isinstance(logits, torch.Tensor):
                raise NotYet(
                    f"your function returned a {type(logits).__name__}; return the logits tensor "
                    "(model(**batch).logits)."
                )
            if tuple(logits.shape) != tuple(expected[target].shape):
                raise NotYet(
                    f"on a batch of 4 sentences your function returned shape {tuple(logits.shape)}; "
                    f"the logits have one row per sentence and one column per class."
                )
            if logits.grad_fn is not None:
                raise NotYet(
                    "your logits carry a gradient graph (grad_fn); at inference run the model "
                    "inside `with torch.no_grad():`, which saves memory and time."
                )
            if _max_difference(logits, expected[target]) <= 1e-5:
                continue
            if _max_difference(logits, expected[other]) <= 1e-5:
                raise NotYet(
                    f"asked for adapter {target!r} while {other!r} was active, your function returned "
                    f"{other!r}'s logits: it did not switch (model.set_adapter)."
                )
            if model.training:
                raise NotYet(
                    f"asked for adapter {target!r}, your logits differ from inference by up to "
                    f"{_max_difference(logits, expected[target]):.3g} and the model is still in train "
                    "mode: dropout is on; call model.eval() first."
                )
            raise NotYet(
                f"asked for adapter {target!r}, your logits differ from that adapter's by up to "
                f"{_max_difference(logits, expected[target]):.3g}."
            )
    finally:
        model.set_adapter(was_active)
        model.train(was_training)
    return (
        f"switches to each of {', '.join(repr(n) for n in names)} and returns its inference logits "
        "(eval mode, no gradient graph)."
    )


HOULSBY_R = (
    8  # the exercise's bottleneck: not the notebook model's r = 16, so the count is not a copy of its formula
)


def houlsby_parameters(model_name: str | None = None, r: int = HOULSBY_R, num_labels: int = 2) -> int:
    r"""Two adapters per layer, each :math:`2dr + d + r`, plus the head's :math:`d \cdot labels + labels`."""
    config = AutoConfig.from_pretrained(model_location(resolve_model_name(model_name)))
    d, layers = config.hidden_size, config.num_hidden_layers
    return layers * 2 * (2 * d * r + d + r) + d * num_labels + num_labels


@exercise("3.houlsby", kind="number")
def grade_houlsby(answer: Any) -> str:
    """The count for the notebook's model, with the named slips told apart."""
    if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
        raise NotYet(f"give a whole number of parameters, not {type(answer).__name__} {answer!r}.")
    config = AutoConfig.from_pretrained(model_location(resolve_model_name()))
    d, layers, r = config.hidden_size, config.num_hidden_layers, HOULSBY_R
    right = houlsby_parameters()
    slips = {
        houlsby_parameters(r=16): "that is for r = 16, the model above; the exercise asks for r = 8.",
        layers * (2 * d * r + d + r)
        + 2 * d
        + 2: "that is one adapter per layer (Pfeiffer); Houlsby puts two in each layer.",
        layers * 2 * (2 * d * r + d + r): "the adapters are right, but the 2-class head trains too.",
        layers * 2 * 2 * d * r + 2 * d + 2: "the adapters' biases are missing (each Linear has one).",
    }
    if answer == right:
        return f"{right:,} trainable parameters."
    if answer in slips:
        raise NotYet(slips[answer])
    raise NotYet(f"{answer:,} is too {'high' if answer > right else 'low'}; count 2dr + d + r per adapter.")
