"""Tiny random BERT models: every test runs offline on a CPU in well under a second each; and, for
the command-line tests, one tiny BERT saved to a folder and one tiny SST-2 folder per session."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedConfig

WORDS = ["good", "great", "fine", "warm", "funny", "bad", "dull", "poor", "weak", "cold"]


def tiny_config(
    attn_implementation: str = "eager", config_class: type[PreTrainedConfig] = BertConfig, **overrides
) -> PreTrainedConfig:
    """A 2-layer, 32-wide config with a 100-word vocabulary (BERT's, or ``config_class``'s for another
    encoder of the same shape)."""
    values = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        attn_implementation=attn_implementation,
    )
    values.update(overrides)
    return config_class(**values)


def tiny_classifier(
    attn_implementation: str = "eager", seed: int = 0, **overrides
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(attn_implementation, **overrides)).eval()


def tiny_encoder(attn_implementation: str = "eager", seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(tiny_config(attn_implementation)).eval()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two sequences, the second padded after 3 tokens."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 100, (2, 6), generator=generator)
    attention_mask = torch.ones(2, 6, dtype=torch.long)
    attention_mask[1, 3:] = 0
    input_ids[1, 3:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def snapshot(model: torch.nn.Module) -> tuple[str, dict[str, torch.Tensor], dict[str, bool]]:
    """Everything that 'unchanged' means: structure, values and which tensors train."""
    return (
        repr(model),
        {k: v.clone() for k, v in model.state_dict().items()},
        {k: p.requires_grad for k, p in model.named_parameters()},
    )


def assert_unchanged(model: torch.nn.Module, before) -> None:
    structure, values, trainable = snapshot(model)
    assert structure == before[0]
    assert values.keys() == before[1].keys()
    assert all(torch.equal(values[k], before[1][k]) for k in values)
    assert trainable == before[2]


@contextmanager
def refused_unchanged(model: torch.nn.Module, error: type[Exception], match: str) -> Iterator[None]:
    """The block must raise ``error`` with a message matching ``match`` and leave ``model`` as it was."""
    before = snapshot(model)
    with pytest.raises(error, match=match):
        yield
    assert_unchanged(model, before)


def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Stand-in for training: move every trainable tensor by random noise, so that zero-initialised
    tensors (LoRA's B, an adapter's W_up) act and a lost or mixed-up tensor shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model


def write_tiny_model(folder: Path) -> str:
    """A 2-layer, 32-wide random BERT with the packaged tokenizer, saved like a hub model."""
    from adapterlib.modeling import PACKAGED_MODEL, load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    load_tokenizer(PACKAGED_MODEL).save_pretrained(folder)
    return str(folder)


def write_tiny_sst2(folder: Path, train: int = 64, dev: int = 16) -> str:
    """A GLUE-format folder of distinct short sentences, labelled by their first word."""
    folder.mkdir(parents=True, exist_ok=True)

    def rows(count: int, offset: int) -> str:
        lines = [
            f"{WORDS[i % 10]} film {WORDS[(i // 10) % 10]} plot {i + offset}\t{int(i % 10 < 5)}"
            for i in range(count)
        ]
        return "sentence\tlabel\n" + "\n".join(lines) + "\n"

    (folder / "train.tsv").write_text(rows(train, 0))
    (folder / "dev.tsv").write_text(rows(dev, 1_000))
    return str(folder)


def tiny_train_argv(
    method: str, model_dir: str, data_dir: str, out, *options: str, train_size: int = 0
) -> list[str]:
    """The command line of one epoch of ``train`` on a tiny model and data folder (``train_size`` 0:
    every row); ``options`` go after ``--method``, e.g. ``"--r", "4"``."""
    return [
        "train",
        "--method",
        method,
        *options,
        "--model",
        model_dir,
        "--data-dir",
        data_dir,
        "--train-size",
        str(train_size),
        "--epochs",
        "1",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """One tiny BERT folder for every command-line test of the session (read-only for them)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def data_root() -> Path:
    """The folder holding ``sst2/`` and ``senteval/``; a test using it is marked ``task_data``, which
    skips it where the folder is missing (and fails it under CI: the top-level conftest)."""
    return Path(os.environ["ADAPTERLIB_DATA_ROOT"])


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    """One tiny SST-2 folder (64 training rows, 16 validation rows) for the whole session."""
    return write_tiny_sst2(tmp_path_factory.mktemp("tiny-sst2"))


# Tests that train a model through the Trainer, start a subprocess, a notebook or a browser:
# `python -m pytest -m "not slow"` leaves them out (the fast loop, MAINTAINERS.md). Tests
# in the files the list does not name carry @pytest.mark.slow themselves.
SLOW_MODULES = {
    "test_readme",
    "test_browser",
    "test_browser_rank",
    "test_distributed",
    "test_benchmarks",
    "test_setup_check",  # python -m adapterlib check-setup in subprocesses
    "test_lint",  # runs ruff
    "test_ci_browser_skips",  # pytest inside pytest, three times
    "test_grading_contract",  # every cheat on every exercise: 635 tryouts, about a minute
}
SLOW_TESTS = {
    "test_train_bitfit_on_the_command_line",
    "test_train_parallel_then_predict_through_the_command_line",
    "test_training_and_evaluation_run_in_the_recorded_precision",
    "test_tutorial_config_and_trainer_train_only_the_adapter",  # the Trainer
    "test_the_help_names_defaults_paths_reuse_precision_and_a_smoke_run",  # starts python -m adapterlib.rank_study
    "test_the_whole_study_on_a_tiny_model",  # the same, training
    "test_the_figures_and_the_explorer_read_a_run_with_one_seed",
    "test_sigterm_and_killed_runs_leave_no_partial_folder",
    "test_the_package_works_without_bitsandbytes",  # a fresh interpreter
    "test_concurrent_writers_never_show_a_reader_a_mixed_pair",  # forked processes
    "test_a_method_registered_late_keeps_the_whole_contract",  # the whole registry contract, twice
    "test_the_build_writes_slides_and_a_handout_and_leaves_the_notebooks",  # nbconvert's slides
    "test_nf4_on_real_minilm_weights_equals_bitsandbytes",  # loads the real MiniLM
    "test_bits_per_weight_with_double_quantization_on_minilm",  # quantizes the real MiniLM
    "test_a_shown_run_whose_default_changed_stays_until_it_is_retrained",  # compare runs, a chart each
    "test_a_smaller_grid_keeps_every_run_in_the_table",  # compare runs, a chart each
    # the course: nbgrader in subprocesses (the `graded` fixture)
    "test_the_release_is_the_self_study_stub_without_solutions",
    "test_nbgrader_commands_run",
    "test_scores_and_status",
    "test_points_per_exercise",
    "test_status_names_deleted_and_renamed_cells",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        module = getattr(item, "module", None)
        notebook = item.path.suffix == ".ipynb"
        if (
            notebook
            or (module and module.__name__ in SLOW_MODULES)
            or getattr(item, "originalname", "") in SLOW_TESTS
        ):
            item.add_marker(pytest.mark.slow)
