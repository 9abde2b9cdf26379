"""SST-2 (GLUE), from a local GLUE-format folder or from the Hugging Face hub.

The folder holds ``train.tsv`` and ``dev.tsv``, each with the header ``sentence<TAB>label``.
Sentences are PTB-tokenised and contain quote characters, so the TSV is read with quoting off,
and with missing-value detection off so that a sentence such as ``null`` stays a string.

The hub is only asked when no folder is named, and only after one quick check that it answers
(:func:`hub_reachable`), so a machine without network learns in seconds what to pass instead of
waiting for the hub client's retries. ``datasets`` is imported when data is read, not before, so
that the command line can check its arguments without that import.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import DatasetDict

DATA_DIR_VARIABLE = "ADAPTERLIB_SST2_DIR"
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
HEADER = "sentence\tlabel"
LABEL_NAMES = ["negative", "positive"]
HUB_DATASET = ("nyu-mll/glue", "sst2")
HUB_URL = "https://huggingface.co"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder given as argument, else ``$ADAPTERLIB_SST2_DIR``, else None (use the hub).

    A relative path is made absolute here, against the current directory at the moment it is
    read, so that nothing later depends on where the process happens to be.
    """
    chosen = data_dir or os.environ.get(DATA_DIR_VARIABLE)
    return Path(chosen).expanduser().absolute() if chosen else None


def hub_switched_off() -> bool:
    """Whether ``$HF_HUB_OFFLINE`` or ``$HF_DATASETS_OFFLINE`` is set to 1 (or true, yes, on)."""
    return any(os.environ.get(name, "").upper() in ("1", "TRUE", "YES", "ON") for name in OFFLINE_VARIABLES)


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers one HEAD request within ``timeout`` seconds; False at
    once when it is switched off (:func:`hub_switched_off`).

    Any HTTP answer counts; no answer (no network, no name server, a firewall) does not. The
    request runs in a thread so that a hanging name lookup cannot outlast ``timeout`` either.
    Proxies named in ``$HTTPS_PROXY`` are used, as the hub client would.
    """
    if hub_switched_off():
        return False
    answered = threading.Event()

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(HUB_URL, method="HEAD"), timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()
        except OSError:
            pass

    threading.Thread(target=ask, daemon=True).start()
    return answered.wait(timeout)


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"SST-2 data folder {folder} does not exist (from the argument or ${DATA_DIR_VARIABLE}).")
    for file in SPLIT_FILES.values():
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"SST-2 data folder {folder} has no {file}; a GLUE-format folder holds train.tsv and dev.tsv.")
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().rstrip("\n")
        if header != HEADER:
            raise ValueError(f"{path}, line 1: header is {header!r}; expected 'sentence<TAB>label'.")


def read_folder(folder: Path) -> DatasetDict:
    """Read the GLUE TSVs with the datasets csv loader and check every label."""
    from datasets import ClassLabel, DatasetDict, Features, Value, load_dataset

    check_folder(folder)
    files = {split: str(folder / file) for split, file in SPLIT_FILES.items()}
    as_text = Features({"sentence": Value("string"), "label": Value("string")})
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=3, keep_default_na=False, features=as_text)
    splits = {}
    for split, dataset in raw.items():
        labels = dataset["label"]
        bad = next((i for i, label in enumerate(labels) if label not in ("0", "1")), None)
        if bad is not None:
            raise ValueError(f"{files[split]}, line {bad + 2}: label {labels[bad]!r} is not 0 or 1.")
        dataset = dataset.cast_column("label", Value("int64")).cast_column("label", ClassLabel(names=LABEL_NAMES))
        splits[split] = dataset.add_column("idx", list(range(len(dataset))))
    return DatasetDict(splits)


def load_sst2(data_dir: str | os.PathLike | None = None) -> DatasetDict:
    """SST-2 as a ``DatasetDict`` with ``train`` (67,349) and ``validation`` (872) splits.

    Columns as on the hub: ``sentence``, ``label`` (0 negative, 1 positive), ``idx``. Source:
    ``data_dir``, else ``$ADAPTERLIB_SST2_DIR``, else ``nyu-mll/glue`` from the hub when it answers.
    """
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        return read_folder(folder)
    from datasets import DatasetDict, load_dataset

    advice = (
        f"No SST-2 data reachable. Either pass data_dir= (or set ${DATA_DIR_VARIABLE}) to a GLUE-format folder "
        f"with train.tsv and dev.tsv, or allow access to the Hugging Face hub for {'/'.join(HUB_DATASET)} (config sst2)."
    )
    if not hub_reachable():
        state = "is switched off ($HF_HUB_OFFLINE / $HF_DATASETS_OFFLINE)" if hub_switched_off() else "does not answer"
        raise FileNotFoundError(f"{advice} The hub {state}.")
    try:
        hub = load_dataset(*HUB_DATASET)
    except Exception as error:  # no access, or no such dataset
        raise FileNotFoundError(f"{advice} Hub error: {type(error).__name__}: {error}") from error
    return DatasetDict({"train": hub["train"], "validation": hub["validation"]})
