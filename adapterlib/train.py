"""Fine-tune and evaluate one method on SST-2 with the Hugging Face ``Trainer``.

:func:`train_run` trains one :class:`~adapterlib.runs.RunSpec`, a recipe whose inputs (model,
data folder, precision, PEFT config, steps) were resolved and checked once; the command line
builds the spec itself, and :func:`train_and_evaluate` (the comparison grid, the rank study, the
notebooks) builds it from a recipe, a model name and a data folder. Both return the model and a
result record with the method, its hyper-parameters, the parameter counts, validation accuracy,
timings, the steps and epochs trained, and the precision it ran in.

The seed recipe: the train split shuffled with seed 42, its first 2,000 examples, 3 epochs,
batch 16, AdamW with linear decay, gradient clipping 1.0, the full 872-example validation
split. Examples 2,000-2,999 of the same shuffle form the *tuning slice*, used instead of the
validation split while choosing hyper-parameters (``evaluate_on="tuning"``).

Hardware. A CUDA GPU when there is one, else the CPU (Apple's ``mps`` in a single process).
Launched by ``torchrun --nproc_per_node N``, the N processes train one model together
(data parallel, gloo on CPUs, NCCL on GPUs): each step, every process computes the gradient of
its own ``batch_size / N`` examples, the gradients are averaged, and every process applies the
same update, so the run is the same recipe with the same global batch; evaluation is shared the
same way, and only the first process (rank 0) writes results.

Precision (``Recipe.precision``). ``fp32``: everything in float32. ``bf16``: the forward and
backward passes run under bfloat16 autocast (matrix products in bf16, 8 bits of mantissa instead
of 23), while weights, gradients and AdamW's state stay float32. ``auto``: bf16 where the hardware
computes it natively (a GPU with bf16, fp16 on older GPUs, a CPU with AVX512-BF16 or AMX), fp32
elsewhere; the default. Measured side by side with fp32 (``benchmarks/precision.py``,
``benchmarks/epoch.py``, README), bf16 reached the same validation accuracy within the spread between seeds for
every method, 1.2-1.4 times faster on a CPU with AMX.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from torch import nn
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed

from .counting import count_parameters
from .data import load_sst2
from .methods import ByName, get_baseline, get_entry
from .modeling import DEFAULT_POOLING, load_classifier, load_tokenizer, process_count, training_device
from .peft_model import get_peft_model
from .runs import Recipe, RunSpec

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_POOLING",
    "MAX_LENGTH",
    "SHUFFLE_SEED",
    "CompactLog",
    "Recipe",
    "RunSpec",
    "changes_from_seed_recipe",
    "prepare_model",
    "train_and_evaluate",
    "train_run",
]

# Learning rate and pooling per method, chosen on the tuning slice (results/tuning.jsonl, README):
# the best score, and between choices within 0.5 points the one already in place. A view of the
# registry (methods and baselines), read at each lookup.
DEFAULT_LEARNING_RATES = ByName("learning_rate")
SHUFFLE_SEED = 42
TUNING_SLICE = range(2_000, 3_000)
MAX_LENGTH = 128


# The recipe the comparison started from: random batches, [CLS] pooling, and each registry entry's
# ``seed_learning_rate``.
SEED_RECIPE = {
    "train_size": 2_000,
    "epochs": 3.0,
    "batch_size": 16,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "pooling": "cls",
}


def changes_from_seed_recipe(recipe: Recipe) -> dict[str, Any]:
    """``{field: [seed value, this value]}`` for every way ``recipe`` departs from the seed recipe."""
    changes = {k: [v, getattr(recipe, k)] for k, v in SEED_RECIPE.items() if getattr(recipe, k) != v}
    seed_rate = get_entry(recipe.method).seed_learning_rate
    if seed_rate != recipe.learning_rate:
        changes["learning_rate"] = [seed_rate, recipe.learning_rate]
    changes["batch_order"] = ["random", "length-grouped"]
    return changes


def prepare_model(recipe: Recipe, model_name: str | None) -> nn.Module:
    """The base classifier with the recipe's method applied and the right parts trainable."""
    model = load_classifier(
        model_name, num_labels=2, pooling=recipe.pooling, quantization=recipe.base_quantization
    )
    peft_config = recipe.peft_config()
    if peft_config is not None:
        return get_peft_model(model, peft_config)
    return get_baseline(recipe.method).freeze(model)


def tokenized_splits(tokenizer, data_dir: str | Path | None, train_size: int | None, evaluate_on: str):
    """Training examples and evaluation examples, tokenised without padding."""
    sst2 = load_sst2(data_dir)
    shuffled = sst2["train"].shuffle(seed=SHUFFLE_SEED)
    train = shuffled.select(range(train_size)) if train_size else shuffled
    evaluation = shuffled.select(TUNING_SLICE) if evaluate_on == "tuning" else sst2["validation"]

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=MAX_LENGTH)

    def prepare(split):
        split = split.map(tokenize, batched=True, remove_columns=["sentence", "idx"])
        return split.rename_column("label", "labels")

    return prepare(train), prepare(evaluation)


class CompactLog(TrainerCallback):
    """One plain line per logging step instead of a progress bar (for notebooks)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            print(
                f"step {state.global_step:>5}/{state.max_steps}  epoch {logs.get('epoch', 0):.2f}  loss "
                f"{logs['loss']:.4f}"
            )


def accuracy_metric(predictions) -> dict[str, float]:
    """The Trainer's ``compute_metrics``: the share of argmax predictions equal to the label."""
    return {"accuracy": float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())}


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def train_and_evaluate(
    recipe: Recipe,
    model_name: str | None = None,
    data_dir: str | None = None,
    output_dir: str | None = None,
    evaluate_on: str = "validation",
    progress: bool = True,
    evaluate_each_epoch: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``recipe`` and return ``(model, result record)``: :func:`train_run` on the
    :class:`RunSpec` that ``recipe``, ``model_name`` and ``data_dir`` resolve to."""
    spec = RunSpec.resolve(recipe, model_name, data_dir, evaluate_on, device=training_device())
    return train_run(spec, output_dir, progress, evaluate_each_epoch)


def train_run(
    spec: RunSpec,
    output_dir: str | None = None,
    progress: bool = True,
    evaluate_each_epoch: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the run ``spec`` describes and return ``(model, result record)``.

    ``output_dir`` is the Trainer's working folder; by default a temporary folder, removed at the
    end whether training finishes or fails. ``progress=True`` shows the Trainer's progress bar;
    ``False`` prints a few compact lines. ``evaluate_each_epoch`` also scores the evaluation split
    after every epoch (the record's ``accuracy_per_epoch``); the training time excludes those
    evaluations. Under ``torchrun`` every process returns the same model and record. The record's
    ``epochs_trained`` is what the steps taken make (a run ends at a whole step).
    """
    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix="adapterlib-trainer-") as workdir:
            return train_run(spec, workdir, progress, evaluate_each_epoch)
    recipe, processes, precision = spec.recipe, process_count(), spec.precision
    set_seed(recipe.seed)
    tokenizer = load_tokenizer(spec.model_name)
    train, evaluation = tokenized_splits(tokenizer, spec.data_dir, recipe.train_size, spec.evaluate_on)
    model = prepare_model(recipe, spec.model_name)
    device = training_device()
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=recipe.batch_size // processes,
        per_device_eval_batch_size=64,
        num_train_epochs=recipe.epochs,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length",
        eval_strategy="epoch" if evaluate_each_epoch else "no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, spec.steps // 4),
        report_to="none",
        seed=recipe.seed,
        disable_tqdm=not progress,
        dataloader_pin_memory=device == "cuda",
        # Without use_cpu, accelerate only sets up several processes for an accelerator and a
        # torchrun launch on CPUs would start independent trainings.
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and processes > 1 else None,
        ddp_find_unused_parameters=False,  # every trainable tensor takes part in every forward pass
        bf16=precision == "bf16",
        fp16=precision == "fp16",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation if evaluate_each_epoch else None,
        compute_metrics=accuracy_metric,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[] if progress else [CompactLog()],
    )
    # The model's loss is the mean over this process's batch, whatever keyword arguments its forward
    # takes; told otherwise (by a ``**kwargs`` in forward), the Trainer multiplies the loss, and so the
    # gradients, by the number of processes, expecting a sum divided by the tokens of all of them.
    trainer.model_accepts_loss_kwargs = False
    if not progress:
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    started = time.perf_counter()
    train_output = trainer.train()
    epoch_scores = [log for log in trainer.state.log_history if "eval_accuracy" in log]
    seconds = time.perf_counter() - started - sum(log["eval_runtime"] for log in epoch_scores)
    predictions = trainer.predict(evaluation)  # shared between the processes, gathered in every one
    accuracy = accuracy_metric(predictions)["accuracy"]
    # The plain model: without the distributed wrapper and without the autocast patched onto forward.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    trainable, total, fraction = count_parameters(model)
    steps = train_output.global_step
    record = {
        "method": recipe.method,
        "recipe": asdict(recipe),
        "peft_config": None if spec.peft_config is None else spec.peft_config.to_dict(),
        "model": spec.model_name,
        "data_dir": None if spec.data_dir is None else str(spec.data_dir),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_fraction": fraction,
        "evaluated_on": spec.evaluate_on,
        "accuracy": accuracy,
        **(
            {"accuracy_per_epoch": [log["eval_accuracy"] for log in epoch_scores]}
            if evaluate_each_epoch
            else {}
        ),
        "evaluation_examples": len(evaluation),
        "train_examples": len(train),
        "steps": steps,
        "epochs_trained": steps / spec.steps_in_epoch,
        "train_seconds": seconds,
        "seconds_per_step": seconds / steps,
        "examples_per_second": len(train) * steps / spec.steps_in_epoch / seconds,
        "device": str(args.device),
        "processes": processes,
        "precision": precision,
        "versions": library_versions(),
    }
    return model, record
