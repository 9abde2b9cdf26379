"""The rank study: the linear algebra (adapterlib.low_rank) on small matrices, the study's pieces on a
tiny random BERT, the whole command on a tiny setting, and the committed result files."""

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from adapterlib import LoraConfig, TaskType, get_peft_model, rank_study
from adapterlib.low_rank import energy_shares, similarity_grid, subspace_similarity, truncate
from adapterlib.rank_study import (
    MATRICES,
    QUERY_VALUE,
    correct_answers,
    lora_deltas,
    lora_study,
    matrices,
    set_truncated,
    weight_deltas,
)
from adapterlib.train import Recipe
from conftest import tiny_classifier, write_tiny_model, write_tiny_sst2

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "rank"


def random_matrix(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed))


def orthonormal(rows: int, columns: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(random_matrix(rows, columns, seed).double())[0]


# ---------------------------------------------------------------- the linear algebra


@pytest.mark.parametrize("shape", [(12, 7), (7, 12)])
def test_truncation_is_exact_at_full_rank_zero_at_rank_zero_and_optimal_between(shape):
    delta = random_matrix(*shape)
    full = min(shape)
    assert torch.equal(truncate(delta, None), delta)
    assert torch.equal(truncate(delta, full), delta)
    assert torch.count_nonzero(truncate(delta, 0)) == 0
    singular_values = torch.linalg.svdvals(delta)
    for r in range(1, full):
        result = truncate(delta, r)
        assert torch.linalg.matrix_rank(result) == r
        # Eckart-Young: the error is exactly the energy of the singular values left out
        assert (delta - result).norm() ** 2 == pytest.approx(
            singular_values[r:].pow(2).sum().item(), rel=1e-4
        )


def test_energy_shares_rise_from_zero_to_one():
    singular_values = torch.linalg.svdvals(random_matrix(20, 9))
    shares = energy_shares(singular_values)
    assert len(shares) == 10 and shares[0] == 0 and shares[-1] == pytest.approx(1.0)
    assert torch.all(shares[1:] >= shares[:-1])
    assert shares[1] == pytest.approx((singular_values[0] ** 2 / singular_values.pow(2).sum()).item())


def test_subspace_similarity_of_a_subspace_with_itself_is_one_and_orthogonal_ones_zero():
    basis = orthonormal(30, 30, 0)
    for i in (1, 4, 10):
        assert subspace_similarity(basis, basis, i, i) == pytest.approx(1.0)
        assert subspace_similarity(basis, basis, i, 2 * i) == pytest.approx(1.0)  # a span inside a larger one
    assert subspace_similarity(basis[:, :5], basis[:, 5:], 5, 5) == pytest.approx(0.0, abs=1e-12)


def test_subspace_similarity_of_random_subspaces_is_about_max_i_j_over_n():
    """E ||U1^T U2||_F^2 = i j / n for independent random subspaces, so phi averages max(i, j) / n."""
    values = [
        subspace_similarity(orthonormal(200, 8, 2 * s), orthonormal(200, 32, 2 * s + 1), 8, 32)
        for s in range(40)
    ]
    assert sum(values) / len(values) == pytest.approx(32 / 200, rel=0.1)


def test_similarity_grid_holds_phi_for_every_i_and_j():
    u1, u2 = orthonormal(16, 6, 0), orthonormal(16, 10, 1)
    grid = similarity_grid(u1, u2, 3, 8)
    assert len(grid) == 3 and len(grid[0]) == 8
    for i in range(1, 4):
        for j in range(1, 9):
            assert grid[i - 1][j - 1] == pytest.approx(subspace_similarity(u1, u2, i, j), rel=1e-4)


# ---------------------------------------------------------------- models


def fine_tuned_pair():
    """A tiny BERT classifier and a copy whose every weight has moved, as after fine-tuning."""
    pretrained, finetuned = tiny_classifier(seed=0), tiny_classifier(seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in finetuned.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return pretrained, finetuned


def test_matrices_finds_the_six_weights_of_every_layer_under_lora_too():
    model = tiny_classifier()
    weights = matrices(model)
    assert len(weights) == 2 * len(MATRICES)
    assert weights["1.intermediate.dense"] is model.bert.encoder.layer[1].intermediate.dense.weight
    wrapped = get_peft_model(tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS, r=2))
    assert all(torch.equal(w, weights[k]) for k, w in matrices(wrapped).items())


@pytest.mark.parametrize("names", [QUERY_VALUE, MATRICES])
def test_truncated_model_is_pretrained_at_rank_zero_and_fine_tuned_at_full_rank(names):
    pretrained_model, model = fine_tuned_pair()
    pretrained, finetuned = matrices(pretrained_model), {k: w.clone() for k, w in matrices(model).items()}
    deltas = weight_deltas(pretrained, finetuned)
    svds = {k: torch.linalg.svd(d, full_matrices=False) for k, d in deltas.items()}
    other = {
        p.data_ptr(): p.clone()
        for n, p in model.named_parameters()
        if not n.endswith("dense.weight") and not any(n.endswith(m + ".weight") for m in MATRICES)
    }

    set_truncated(model, pretrained, finetuned, svds, 0, names)
    for key, weight in matrices(model).items():
        expected = pretrained[key] if key.split(".", 1)[1] in names else finetuned[key]
        assert torch.equal(weight, expected), key
    set_truncated(model, pretrained, finetuned, svds, 2, names)
    for key, weight in matrices(model).items():
        if key.split(".", 1)[1] in names:
            assert torch.linalg.matrix_rank(weight - pretrained[key], atol=1e-5) == 2, key
    set_truncated(model, pretrained, finetuned, svds, None, names)
    assert all(torch.equal(weight, finetuned[key]) for key, weight in matrices(model).items())
    # embeddings, LayerNorms, biases and the head are never touched
    assert all(torch.equal(p, other[p.data_ptr()]) for p in model.parameters() if p.data_ptr() in other)


def test_lora_deltas_are_scaled_b_times_a():
    model = get_peft_model(tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS, r=2, alpha=6))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_()
    deltas = lora_deltas(model)
    assert sorted(deltas) == sorted(f"{i}.{n}" for i in range(2) for n in QUERY_VALUE)
    site = model.base_model.bert.encoder.layer[1].attention.self.value
    assert torch.allclose(deltas["1.attention.self.value"], 3 * site.active.B @ site.active.A, atol=1e-5)
    assert torch.linalg.matrix_rank(deltas["0.attention.self.query"]) == 2


def test_correct_answers_mark_each_sentence(batch):
    model = tiny_classifier()
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1)
    labels = torch.stack([predicted[0], 1 - predicted[1]])
    assert correct_answers(model, [batch | {"labels": labels}], "fp32") == "10"
    assert correct_answers(model, [batch | {"labels": labels}], "bf16") in ("10", "11", "00", "01")


def test_lora_runs_in_the_log_are_reused_unless_their_weights_are_needed(tmp_path):
    base = Recipe("lora")
    logged = [replace(base, method_options={"r": r}, seed=s) for r in (1, 2) for s in (0, 1)]

    def key(recipe):
        return json.dumps(asdict(recipe), sort_keys=True)

    def record(recipe, accuracy):
        return {"method": "lora", "recipe": asdict(recipe), "accuracy": accuracy}

    log = tmp_path / "runs.jsonl"
    log.write_text("".join(json.dumps(record(r, 0.5) | {"key": key(r)}) + "\n" for r in logged))
    trained = []

    def train(recipe):
        trained.append((recipe.method_options["r"], recipe.seed))
        model = get_peft_model(
            tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS, r=recipe.method_options["r"])
        )
        return model, record(recipe, 0.75)

    import adapterlib.runs as compare_command

    original = compare_command.record_key
    compare_command.record_key = lambda r: r["key"]
    try:
        records, retrained, deltas = lora_study(train, log, [1, 2, 4], [0, 1], (1, 4), base, key)
    finally:
        compare_command.record_key = original
    # logged: r = 1, 2 at seeds 0, 1; the similarities need r = 1 seed 0, r = 4 seeds 0 and 1
    assert sorted(trained) == [(1, 0), (4, 0), (4, 1)]
    assert [
        (r["recipe"]["method_options"]["r"], r["recipe"]["seed"], "reused_from" in r) for r in records
    ] == [(1, 0, True), (1, 1, True), (2, 0, True), (2, 1, True), (4, 0, False), (4, 1, False)]
    assert [(r["recipe"]["method_options"]["r"], r["accuracy"]) for r in retrained] == [(1, 0.75)]
    assert sorted(deltas) == [(1, 0), (4, 0), (4, 1)]


# ---------------------------------------------------------------- the whole command, tiny


def run_tiny_study(tmp_path: Path, seeds: list[str]) -> subprocess.CompletedProcess:
    """The command on a random 2-layer BERT and a hand-made 64-sentence SST-2, writing to tmp_path / "rank"."""
    model, data = (
        write_tiny_model(tmp_path / "tiny-bert"),
        write_tiny_sst2(tmp_path / "sst2", train=64, dev=16),
    )
    command = [
        sys.executable,
        "-m",
        "adapterlib.rank_study",
        "--data-dir",
        data,
        "--model",
        model,
        "--out",
        str(tmp_path / "rank"),
        "--runs",
        str(tmp_path / "none.jsonl"),
        "--train-size",
        "64",
        "--lora-train-size",
        "32",
        "--ranks",
        "0",
        "1",
        "--lora-ranks",
        "1",
        "2",
        "--seeds",
        *seeds,
        "--similarity-ranks",
        "1",
        "2",
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return finished


def test_the_help_names_defaults_paths_reuse_precision_and_a_smoke_run():
    finished = subprocess.run(
        [sys.executable, "-m", "adapterlib.rank_study", "--help"], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0
    text = " ".join(finished.stdout.split())
    for option in (
        "--out",
        "--data-dir",
        "--model",
        "--runs",
        "--train-size",
        "--lora-train-size",
        "--ranks",
        "--lora-ranks",
        "--seeds",
        "--similarity-ranks",
        "--overwrite",
    ):
        assert option in text
    assert text.count("(default: ") >= 8  # every option with a default shows it
    for needed in (
        "32 minutes",
        "resolved against the directory the command is started in",
        "--overwrite",
        "checked before the fine-tuning starts",
        "fingerprints",
        "fp32",
        "every LoRA run is trained",
        "smoke test",
        "--seeds 0 --similarity-ranks 1 2",
    ):
        assert needed in text, needed


def test_the_whole_study_on_a_tiny_model(tmp_path):
    """The command end to end on a random 2-layer BERT and a hand-made 64-sentence SST-2."""
    finished = run_tiny_study(tmp_path, ["0", "1"])
    out = tmp_path / "rank"
    assert "no run log at" in finished.stdout  # --runs names a file that is not there: everything is trained
    files = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(files) == ["lora.json", "similarity.json", "spectra.json", "study.json", "truncation.json"]
    truncation, study = files["truncation.json"], files["study.json"]
    runs = {(run["targets"], run["r"]): run for run in truncation["runs"]}
    assert sorted(runs, key=str) == sorted(
        ((t, r) for t in ("all", "query,value") for r in (0, 1, "full")), key=str
    )
    assert (
        runs["all", "full"]["correct"] == runs["query,value", "full"]["correct"]
    )  # both are the fine-tuned model
    assert all(len(run["correct"]) == 16 and run["precision"] and run["seed"] == 0 for run in runs.values())
    assert study["full_recipe"]["train_size"] == 64 and study["full_recipe"]["epochs"] == 1
    assert study["environment"]["torch_threads"] == 1
    assert [row["r"] for row in files["lora.json"]["summary"]] == [1, 2]
    assert all(row["seeds"] == 2 for row in files["lora.json"]["summary"])
    spectra = files["spectra.json"]["singular_values"]
    assert len(spectra["intermediate.dense"]) == 2 and len(spectra["intermediate.dense"][0]) == 32
    diagonals = files["similarity.json"]["diagonals"]["0.attention.self.query.input"]
    assert set(diagonals) == {"lora2_full", "lora2_seeds"} and len(diagonals["lora2_seeds"]) == 2


def test_the_figures_and_the_explorer_read_a_run_with_one_seed(tmp_path, monkeypatch, capsys):
    """A small run has no seed-against-seed similarity and no interval over seeds: the figures leave
    them out and say so; the folder is read relative to the current directory."""
    import matplotlib

    matplotlib.use("Agg")
    from adapterlib.exercises.nb08 import energy_share
    from adapterlib.rank_widget import (
        RankExplorer,
        RankResults,
        plot_accuracy,
        plot_energy,
        plot_similarity_diagonals,
        plot_similarity_grids,
        plot_spectra,
        slider_ranks,
    )

    run_tiny_study(tmp_path, ["0"])
    monkeypatch.chdir(tmp_path)
    results = RankResults.load("rank")
    assert "lora2_seeds" not in results.similarity["diagonals"]["0.attention.self.query.input"]
    capsys.readouterr()
    plot_similarity_diagonals(results)
    assert "left out: LoRA r=2, seed 0 vs seed 1" in capsys.readouterr().out
    (
        plot_spectra(results),
        plot_energy(results, energy_share),
        plot_accuracy(results, 3),
        plot_accuracy(results, 0),
    )
    plot_similarity_grids(results)  # the last layer
    with pytest.raises(ValueError, match="layers 0 to 1"):
        plot_similarity_grids(results, layer=5)
    assert slider_ranks(results)[:6] == [0, 1, 2, 3, 4, 6] and slider_ranks(results)[-1] == results.full_rank
    explorer = RankExplorer(results, r=2)
    lora_row = explorer.rows(2)[-1]
    assert (
        lora_row == ("LoRA trained at rank r (mean of 1 seed)", lora_row[1], "measured")
        and "±" not in lora_row[1]
    )
    assert explorer.rows(0)[0][1:] == ("–", "r = 0 is no LoRA")
    with pytest.raises(FileNotFoundError, match="--out elsewhere"):
        RankResults.load("elsewhere")


def test_the_energy_figure_hands_each_call_its_own_copy():
    """An energy function that squares its input in place draws the same curves as a clean one."""
    import matplotlib

    matplotlib.use("Agg")
    from adapterlib.rank_widget import RankResults, plot_energy

    def clean(s, r):
        return (s[:r].pow(2).sum() / s.pow(2).sum()).item()

    def in_place(s, r):
        s.pow_(2)
        return (s[:r].sum() / s.sum()).item()

    results = RankResults.load()
    drawn = [
        [line.get_ydata() for line in plot_energy(results, energy).axes[0].get_lines()]
        for energy in (clean, in_place)
    ]
    assert all(torch.allclose(torch.tensor(a), torch.tensor(b)) for a, b in zip(*drawn))


def test_the_explorer_labels_the_interval_and_offers_rank_zero_and_ranks_between():
    from adapterlib.rank_widget import RankExplorer, RankResults

    explorer = RankExplorer(RankResults.load())
    assert list(explorer.slider.options[:8]) == [(str(k), k) for k in (0, 1, 2, 3, 4, 6, 8, 12)]
    quantity, value, how = explorer.rows(8)[-1]
    assert "±" in value and "95% interval over the 3 seeds" in how
    assert explorer.rows(12)[-1][2] == "interpolated between r=8 and r=16"
    assert explorer.rows(0)[3][2] == "measured"  # the pre-trained query and value: r = 0 was evaluated


# ---------------------------------------------------------------- the committed results


def committed() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in COMMITTED.glob("*.json")}


def test_committed_results_are_small_and_hold_no_weights():
    assert sorted(p.name for p in COMMITTED.iterdir()) == [
        "lora.json",
        "similarity.json",
        "spectra.json",
        "study.json",
        "truncation.json",
    ]
    assert sum(p.stat().st_size for p in COMMITTED.iterdir()) < 1_000_000


def test_committed_results_name_their_recipes_precision_and_seeds():
    results = committed()
    study = results["study"]
    assert study["command"].startswith("python -m adapterlib.rank_study")

    def recorded(recipe: Recipe) -> dict:  # the study ran before a base could be quantized: a float base
        fields = asdict(recipe)
        assert fields.pop("base_quantization") == "none"
        return fields

    assert study["full_recipe"] == recorded(Recipe("full", epochs=1.0, train_size=None, batch_size=32))
    assert study["lora_recipe"] == recorded(Recipe("lora"))  # the comparison grid's recipe
    assert study["full_record"]["train_examples"] == 67_349
    assert all(
        run["precision"] == study["precision"] and run["seed"] == 0 for run in results["truncation"]["runs"]
    )
    records = results["lora"]["records"]
    assert sorted((r["recipe"]["method_options"]["r"], r["recipe"]["seed"]) for r in records) == sorted(
        (r, s) for r in (1, 2, 4, 8, 16, 32, 64) for s in (0, 1, 2)
    )
    assert all(r["precision"] == study["precision"] for r in records)
    reused = [r for r in records if "reused_from" in r]
    assert {r["recipe"]["method_options"]["r"] for r in reused} <= {2, 8, 32}
    assert study["reused_lora_runs"] == len(reused)


def test_committed_truncations_are_bracketed_by_the_pretrained_and_fine_tuned_matrices():
    truncation = committed()["truncation"]
    runs = {(run["targets"], run["r"]): run for run in truncation["runs"]}
    assert runs["query,value", "full"]["correct"] == runs["all", "full"]["correct"]
    # the Trainer scored the same model in length-grouped batches: in bf16, at most a borderline sentence apart
    assert abs(runs["all", "full"]["accuracy"] - truncation["fine_tuned_accuracy"]) <= 1 / 872
    assert sorted(r for t, r in runs if t == "all" and r != "full") == [0, 1, 2, 4, 8, 16, 32, 64]
    for run in runs.values():
        assert run["accuracy"] == run["correct"].count("1") / len(run["correct"])


# ---------------------------------------------------------------- arguments and --out, before any training


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("inputs")
    return {"model": write_tiny_model(folder / "tiny-bert"), "data": write_tiny_sst2(folder / "sst2")}


def study_arguments(inputs: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "--model", inputs["model"], "--data-dir", inputs["data"], "--out", str(out),
        "--runs", str(out.parent / "none.jsonl"), "--train-size", "64", "--lora-train-size", "32",
        "--ranks", "0", "1", "--lora-ranks", "1", "2", "--seeds", "0", "--similarity-ranks", "1", "2",
        *extra,
    ]  # fmt: skip


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def damaged_runs(tmp_path: Path) -> str:
    (tmp_path / "runs.jsonl").write_text(
        '{"method": "lora", "recipe": {"method_options": {}, "seed": 0}}\n{oops\n'
    )
    return str(tmp_path / "runs.jsonl")


def data_in(tmp_path: Path) -> str:
    return write_tiny_sst2(tmp_path / "d")


def missing_dev(tmp_path: Path) -> str:
    write_tiny_sst2(tmp_path / "no-dev")
    (tmp_path / "no-dev" / "dev.tsv").unlink()
    return str(tmp_path / "no-dev")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda tmp: ["--data-dir", "/nonexistent"], "/nonexistent does not exist"),
        (lambda tmp: ["--data-dir", missing_dev(tmp)], "has no dev.tsv"),
        (lambda tmp: ["--runs", damaged_runs(tmp)], "runs.jsonl, line 2 is not JSON"),
        (lambda tmp: ["--model", str(tmp / "no-model")], "no-model"),
        (lambda tmp: ["--ranks", "-1", "0", "1"], "argument --ranks: must be 0 or more, got -1"),
        (lambda tmp: ["--lora-ranks", "0", "1"], "argument --lora-ranks: must be a positive whole number"),
        (lambda tmp: ["--train-size", "-5"], "argument --train-size: must be 0 or more"),
        (lambda tmp: ["--train-size", "65"], "--train-size 65 is more than the 64 rows"),
        (lambda tmp: ["--ranks", "1", "1"], "--ranks 1 1 names a value twice"),
        (lambda tmp: ["--similarity-ranks", "1", "4"], "both among --lora-ranks"),
        (lambda tmp: ["--seeds", "1"], "--seeds must include 0"),
        (lambda tmp: ["--out", str(tmp / "results")], "holds earlier results; .* --overwrite"),
        (lambda tmp: ["--lora-ranks", "1", "2", "5000"], "--lora-ranks 5000: more than the model's hidden size 32"),
        (lambda tmp: ["--ranks", "0", "100000"], "--ranks 100000: more than the model's hidden size 32"),
        (lambda tmp: ["--runs", str(tmp)], "--runs .* is a folder; name the run log file"),
        (lambda tmp: ["--out", str(tmp), "--overwrite"], "holds other files than the study's results \\(results\\)"),
        (lambda tmp: ["--data-dir", data_in(tmp), "--out", str(tmp / "d" / "rank")], "lies in --data-dir"),
        (lambda tmp: ["--data-dir", data_in(tmp), "--out", str(tmp / "d"), "--overwrite"], "holds other files"),
    ],
    ids=[
        "no data", "no dev.tsv", "damaged runs", "no model", "negative rank", "LoRA rank 0", "negative size",
        "size over the data", "repeated rank", "similarity rank", "no seed 0", "earlier results",
        "LoRA rank over the width", "rank over the width", "runs is a folder", "out holds other files",
        "out in the data", "out is the data",
    ],
)  # fmt: skip
def test_every_mistake_stops_the_study_before_it_trains(
    tiny_inputs, tmp_path, monkeypatch, capsys, change, message
):
    results = tmp_path / "results"
    results.mkdir()
    (results / "spectra.json").write_text("{}\n")
    monkeypatch.setattr(rank_study, "study", lambda *args: pytest.fail("the study started"))
    with pytest.raises(SystemExit) as stopped:
        rank_study.main(study_arguments(tiny_inputs, tmp_path / "out") + change(tmp_path))
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists() and not (tmp_path / "d" / "rank").exists()
    assert folder_bytes(results) == {"spectra.json": b"{}\n"}
    if (tmp_path / "d").exists():
        assert sorted(folder_bytes(tmp_path / "d")) == ["dev.tsv", "train.tsv"]


def test_a_failing_study_leaves_earlier_results_whole(tiny_inputs, tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "spectra.json").write_text("{}\n")

    def fails_halfway(args, argv, out):
        (out / "spectra.json").write_text("new\n")
        raise ValueError("a step of the study failed")

    monkeypatch.setattr(rank_study, "study", fails_halfway)
    with pytest.raises(ValueError, match="failed"):
        rank_study.main(study_arguments(tiny_inputs, results, "--overwrite"))
    assert folder_bytes(results) == {"spectra.json": b"{}\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no partial folder left


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "--overwrite"])
def test_a_finished_study_replaces_the_folder_whole(tiny_inputs, tmp_path, monkeypatch, existing):
    out = tmp_path / "results"
    if existing:
        out.mkdir()
        (out / "spectra.json").write_text("old\n")
        (out / "lora.json").write_text("old\n")  # not written by this run: removed

    def writes(args, argv, folder):
        (folder / "spectra.json").write_text("new\n")

    monkeypatch.setattr(rank_study, "study", writes)
    previous = os.umask(0o022)
    try:
        rank_study.main(study_arguments(tiny_inputs, out, *(["--overwrite"] if existing else [])))
    finally:
        os.umask(previous)
    assert folder_bytes(out) == {"spectra.json": b"new\n"}
    assert out.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_only_the_study_s_own_files_are_replaced(tmp_path):
    out, written = tmp_path / "results", tmp_path / ".results.partial-1"
    for folder in (out, written):
        folder.mkdir()
    (out / "spectra.json").write_text("old\n")
    (out / "notes.txt").write_text("mine\n")  # added while the study ran
    (written / "spectra.json").write_text("new\n")
    rank_study.replace_folder(written, out)
    assert folder_bytes(out) == {"spectra.json": b"new\n", "notes.txt": b"mine\n"}
    assert not written.exists()


def test_sigterm_and_killed_runs_leave_no_partial_folder(tiny_inputs, tmp_path, monkeypatch):
    out = tmp_path / "results"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    stale = tmp_path / f".results.partial-{int(finished.stdout)}"  # its process has ended
    live = tmp_path / f".results.partial-{os.getppid()}"
    stale.mkdir(), live.mkdir()

    def terminated(args, argv, folder):
        (folder / "spectra.json").write_text("new\n")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(rank_study, "study", terminated)
    with pytest.raises(SystemExit) as stopped:
        rank_study.main(study_arguments(tiny_inputs, out))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
