"""SST-2 (GLUE), from a local GLUE-format folder or from the Hugging Face hub.

The folder holds ``train.tsv`` and ``dev.tsv``, each with the header ``sentence<TAB>label``.
Sentences are PTB-tokenised and contain quote characters, so the TSV is read with quoting off,
and with missing-value detection off so that a sentence such as ``null`` stays a string.
Before that, every row is checked (:func:`check_folder`): a file that is not UTF-8, has no rows,
a row with other than two fields or a label other than 0 or 1 is refused with its name and line.
:func:`data_fingerprint` names the data's content, so results made on other data are told apart.

The hub is only asked when no folder is named, and only after one quick check that it answers
(:func:`hub_reachable`), so a machine without network learns in seconds what to pass instead of
waiting for the hub client's retries. ``datasets`` is imported when data is read, not before, so
that the command line can check its arguments without that import.
"""

from __future__ import annotations

import hashlib
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
HUB_ROWS = {"train": 67_349, "validation": 872}
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


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark is allowed and dropped), without their
    line ends; a ValueError naming the file and the line for bytes that are not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path} is not UTF-8 text: line {line} holds the byte 0x{raw[error.start]:02x}; "
            f"save the file as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8)."
        ) from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and not lines[-1] else lines


def check_split(path: Path) -> int:
    """Check one GLUE TSV row by row and return its number of rows. Blank lines are skipped, as
    the reader skips them."""
    lines = read_lines(path)
    if not lines:
        raise ValueError(
            f"{path} is empty; it needs the header 'sentence<TAB>label' and one row per sentence."
        )
    if lines[0] != HEADER:
        raise ValueError(f"{path}, line 1: header is {lines[0]!r}; expected 'sentence<TAB>label'.")
    rows = 0
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(
                f"{path}, line {number}: expected 2 tab-separated fields, the sentence and its label; "
                f"found {len(fields)} (a tab inside a sentence must go)."
            )
        if fields[1] not in ("0", "1"):
            raise ValueError(f"{path}, line {number}: label {fields[1]!r} is not 0 or 1.")
        rows += 1
    if not rows:
        raise ValueError(
            f"{path} has the header but no rows; add one row per sentence: the sentence, a tab, its label 0 or 1."
        )
    return rows


def check_folder(folder: Path) -> dict[str, int]:
    """Check that ``folder`` holds both splits, every row readable; return the rows per split.

    Each file must be UTF-8 text with the header ``sentence<TAB>label`` and at least one row of
    two tab-separated fields whose label is 0 or 1. Errors name the file and, where there is
    one, the line.
    """
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(
            f"SST-2 data folder {folder} {state} (from the argument or ${DATA_DIR_VARIABLE})."
        )
    rows = {}
    for split, file in SPLIT_FILES.items():
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(
                f"SST-2 data folder {folder} has no {file}; a GLUE-format folder holds train.tsv and dev.tsv."
            )
        rows[split] = check_split(path)
    return rows


def data_rows(data_dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Rows per split of the data :func:`load_sst2` reads: a folder's, checked row by row
    (:func:`check_folder`), or the hub's GLUE sizes."""
    folder = resolve_data_dir(data_dir)
    return HUB_ROWS if folder is None else check_folder(folder)


def fingerprint(*parts: Path | str) -> str:
    """12 hex digits of one sha256 over the contents of the files and the strings in ``parts``,
    in order. Equal contents give equal fingerprints, wherever the files lie."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with part.open("rb") as handle:
                digest.update(b"file\0" + hashlib.file_digest(handle, "sha256").digest())
        else:
            digest.update(b"text\0" + part.encode() + b"\0")
    return digest.hexdigest()[:12]


def data_fingerprint(data_dir: str | os.PathLike | None = None) -> str:
    """Which data a run reads: the fingerprint of ``train.tsv`` and ``dev.tsv`` for a folder, of
    the dataset's name and config (``nyu-mll/glue``, ``sst2``) for the hub."""
    folder = resolve_data_dir(data_dir)
    return (
        fingerprint(*HUB_DATASET)
        if folder is None
        else fingerprint(*(folder / f for f in SPLIT_FILES.values()))
    )


def read_folder(folder: Path) -> DatasetDict:
    """Check the GLUE TSVs (:func:`check_folder`), then read them with the datasets csv loader."""
    from datasets import ClassLabel, DatasetDict, Features, Value, load_dataset

    check_folder(folder)
    files = {split: str(folder / file) for split, file in SPLIT_FILES.items()}
    as_text = Features({"sentence": Value("string"), "label": Value("string")})
    raw = load_dataset(
        "csv", data_files=files, delimiter="\t", quoting=3, keep_default_na=False, features=as_text
    )
    splits = {}
    for split, dataset in raw.items():
        dataset = dataset.cast_column("label", Value("int64")).cast_column(
            "label", ClassLabel(names=LABEL_NAMES)
        )
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
        f"with train.tsv and dev.tsv, or allow access to the Hugging Face hub for {'/'.join(HUB_DATASET)} "
        "(config sst2)."
    )
    if not hub_reachable():
        state = (
            "is switched off ($HF_HUB_OFFLINE / $HF_DATASETS_OFFLINE)"
            if hub_switched_off()
            else "does not answer"
        )
        raise FileNotFoundError(f"{advice} The hub {state}.")
    try:
        hub = load_dataset(*HUB_DATASET)
    except Exception as error:  # no access, or no such dataset
        raise FileNotFoundError(f"{advice} Hub error: {type(error).__name__}: {error}") from error
    return DatasetDict({"train": hub["train"], "validation": hub["validation"]})
