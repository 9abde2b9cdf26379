"""Reading SST-2: the shared copy, hand-made folders with edge cases, and the errors."""

import http.server
import os
import threading
import time

import pytest

from adapterlib import data
from adapterlib.data import load_sst2, resolve_data_dir

SHARED = os.environ.get("ADAPTERLIB_SST2_DIR")


@pytest.mark.skipif(not SHARED, reason="set ADAPTERLIB_SST2_DIR to the shared SST-2 folder")
def test_shared_copy_has_glue_sizes_and_hub_columns():
    data = load_sst2()
    assert {k: len(v) for k, v in data.items()} == {"train": 67_349, "validation": 872}
    assert data["train"].column_names == ["sentence", "label", "idx"]
    assert data["validation"]["label"].count(1) == 444
    assert data["train"].features["label"].names == ["negative", "positive"]


def write(folder, train, dev="sentence\tlabel\ngood film \t1\n"):
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_text(train)
    (folder / "dev.tsv").write_text(dev)
    return folder


def test_null_nan_and_quotes_stay_strings(tmp_path):
    folder = write(tmp_path / "d", "sentence\tlabel\nnull\t0\nnan\t1\n`` it 's \" great '' \t1\nNA\t0\n")
    data = load_sst2(folder)
    assert data["train"]["sentence"] == ["null", "nan", "`` it 's \" great '' ", "NA"]
    assert data["train"]["label"] == [0, 1, 1, 0]
    assert data["train"]["idx"] == [0, 1, 2, 3]


def test_argument_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERLIB_SST2_DIR", str(tmp_path / "missing"))
    assert len(load_sst2(write(tmp_path / "d", "sentence\tlabel\na\t0\n"))["train"]) == 1


@pytest.mark.parametrize(
    "train, message",
    [
        ("text\tlabel\na\t0\n", r"train.tsv, line 1: header is 'text\\tlabel'"),
        ("sentence\tlabel\na\t0\nb\t2\n", r"train.tsv, line 3: label '2' is not 0 or 1"),
        ("sentence\tlabel\na\t0\nb\t\n", r"train.tsv, line 3: label '' is not 0 or 1"),
        (
            "sentence\tlabel\na\t0\nb\tc\t1\n",
            r"train.tsv, line 3: expected 2 tab-separated fields, .*; found 3",
        ),
        ("sentence\tlabel\n\n", r"train.tsv has the header but no rows"),
        ("", r"train.tsv is empty"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, train, message):
    with pytest.raises(ValueError, match=message):
        load_sst2(write(tmp_path / "d", train))


def test_missing_folder_or_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sst2(tmp_path / "nowhere")
    folder = write(tmp_path / "d", "sentence\tlabel\na\t0\n")
    (folder / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="has no dev.tsv"):
        load_sst2(folder)


def test_no_data_reachable_names_both_ways(monkeypatch):
    monkeypatch.delenv("ADAPTERLIB_SST2_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"ADAPTERLIB_SST2_DIR.*hub for nyu-mll/glue"):
        load_sst2()


def test_relative_folder_is_made_absolute_when_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("d") == tmp_path / "d"
    monkeypatch.setenv("ADAPTERLIB_SST2_DIR", "e")
    from_environment = resolve_data_dir()
    monkeypatch.chdir(tmp_path.parent)
    assert from_environment == tmp_path / "e" and from_environment.is_absolute()
    assert resolve_data_dir() == tmp_path.parent / "e"


@pytest.fixture
def hub_variables_unset(monkeypatch):
    for name in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "ADAPTERLIB_SST2_DIR",
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


def test_hub_reachable_on_any_http_answer_and_not_without_one(hub_variables_unset, monkeypatch):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(data, "HUB_URL", f"http://127.0.0.1:{server.server_port}")
        assert data.hub_reachable()
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert not data.hub_reachable()  # switched off: not even asked
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not data.hub_reachable()  # the server is gone: connection refused


def test_unreachable_hub_fails_at_once_without_retries(hub_variables_unset, monkeypatch):
    import datasets

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # refuses every connection
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub client was called"))
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"pass data_dir= .*The hub does not answer"):
        load_sst2()
    assert time.perf_counter() - started < 5


def test_text_that_is_not_utf8_is_named_with_its_line(tmp_path):
    folder = write(tmp_path / "d", "sentence\tlabel\na\t0\n")
    (folder / "dev.tsv").write_bytes("sentence\tlabel\nun film m\u00e9diocre\t0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"dev.tsv is not UTF-8 text: line 2 holds the byte 0xe9"):
        load_sst2(folder)


def test_byte_order_mark_and_windows_line_ends_are_read_as_the_checks_read_them(tmp_path):
    folder = write(tmp_path / "d", "\ufeffsentence\tlabel\r\na fine film\t1\r\n\r\nnull\t0\r\n")
    assert data.check_folder(folder) == {"train": 2, "validation": 1}
    assert load_sst2(folder)["train"]["sentence"] == ["a fine film", "null"]


def test_fingerprint_follows_the_content_not_the_place(tmp_path):
    first = write(tmp_path / "a", "sentence\tlabel\na\t0\n")
    second = write(tmp_path / "b", "sentence\tlabel\na\t0\n")
    assert data.data_fingerprint(first) == data.data_fingerprint(second)
    (second / "train.tsv").write_text("sentence\tlabel\na\t1\n")
    assert data.data_fingerprint(first) != data.data_fingerprint(second)
    assert len(data.data_fingerprint(first)) == 12
