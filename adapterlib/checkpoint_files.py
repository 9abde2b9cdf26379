"""The adapter-only checkpoint on disk: its files, what it records of the base model, and the checks.

:func:`adapterlib.save_adapter` and :func:`adapterlib.load_adapter` (in :mod:`adapterlib.peft_model`,
which builds the model this module only reads) put these pieces together; :mod:`adapterlib.checkpoint`
gathers all the public names.

A checkpoint is a directory with two files, named as in peft:

* ``adapter_config.json``: the format version, the method's config, the base model's shape and
  two fingerprints of its weights (rounded to bfloat16 directly and through float16 first, so that
  a float32 original and its half-precision copy match one of them), their dtype and a few of their
  values (which tell a float16 and a bfloat16 copy of the same weights from other weights), when
  given a portable name of the base model (never a path), and a SHA-256 of the weights file and
  the method's config together;
* ``adapter_model.safetensors``: only the adapter's tensors (and its copy of the task head),
  named relative to the layer and site they belong to (:meth:`PeftModel.adapter_state_dict`),
  so the names do not depend on what else is installed in the model.

It is a few hundred kilobytes where the base model is tens or hundreds of megabytes. Loading
checks the files, the shape and the tensors before it changes the model, and warns when the
base model's weights differ from those the adapter was trained on. Checkpoints written before
format version 2 (keys were module paths) still load.

The two files are replaced as a pair, and the folder may hold more (other adapters in
sub-folders, ``metrics.json``), so the folder itself is never replaced. A save, under an exclusive
lock on the folder, goes in three steps:

1. both files are written and flushed to disk in the staging folder ``.adapter-staging``;
2. a commit record (``.adapter-staging/COMMIT``, the SHA-256 of each file) is written there: from
   this moment the save counts as done;
3. each file is renamed into place, then the staging folder is removed.

A save or load that finds a staging folder left by an interrupted save (and the lock free)
finishes it when it has its commit record and discards it otherwise, so after an interrupt the
folder holds the old checkpoint or the new one; a load from a folder it may not write to reads
the committed files where they are. A reader does not take the lock; if the pair it
read does not match its SHA-256 (a writer was between two renames), it reads again under a
shared lock, once the writer is done.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .inject import base_fingerprint, base_linear, find_layers, hidden_size, layer_paths, relative_to_layer

if TYPE_CHECKING:
    from .peft_model import PeftModel

try:
    import fcntl
except ImportError:  # Windows: no advisory locks on folders, and a folder cannot be opened to sync it
    fcntl = None

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 2
STAGING = ".adapter-staging"
COMMIT_RECORD = "COMMIT"
FORMAT_2_ONLY = (  # format 1 wrote none of these
    "sha256",
    "base_model_fingerprint",
    "base_model_fingerprint_float16",
    "base_model_dtype",
    "base_model_samples",
)
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class DifferentBaseWarning(UserWarning):
    """The adapter was trained on other base weights of the same shape."""


def model_shape(model: nn.Module) -> dict[str, int]:
    """The shape an adapter depends on: width, depth, heads, FFN width and, if any, labels."""
    layers = find_layers(model)
    attention = layers[0].attention.self
    attention = getattr(attention, "base_layer", attention)
    shape = {
        "hidden_size": hidden_size(layers[0]),
        "num_hidden_layers": len(layers),
        "num_attention_heads": attention.num_attention_heads,
        "intermediate_size": base_linear(layers[0].intermediate.dense).out_features,
    }
    classifier = getattr(model, "classifier", None)
    if classifier is not None:
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        shape["num_labels"] = linears[-1].out_features  # the last Linear of the head (BERT: the only one)
    return shape


@contextlib.contextmanager
def locked(directory: Path, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Hold a lock on the folder itself (no lock file is left behind): exclusive for a writer,
    shared for a reader. Advisory: it orders adapterlib's saves and loads, nothing else.
    Yields whether the lock is held (always, unless ``wait`` is False and another process holds it).
    Without ``fcntl`` (Windows) nothing is locked: saves stay whole, concurrent ones are not ordered."""
    if fcntl is None:
        yield True
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(
                handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            )
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(handle)  # releases the lock


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (created with the user's umask) and flush it to disk."""
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def sync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (renames, new files) to disk."""
    if fcntl is None:
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def finish_interrupted_save(directory: Path) -> None:
    """Complete a save that got as far as its commit record, or discard one that did not.

    Called with the exclusive lock held, so a staging folder found here belongs to no live save."""
    staging = directory / STAGING
    if not staging.is_dir():
        return
    record = staging / COMMIT_RECORD
    if record.is_file():
        for file_name in json.loads(record.read_text(encoding="utf-8")):
            if (staging / file_name).is_file():  # not yet renamed into place
                os.replace(staging / file_name, directory / file_name)
        sync_directory(directory)
    shutil.rmtree(staging)


def recover(directory: Path) -> None:
    """Finish or discard an interrupted save in ``directory``, if there is one (and we may write).
    A staging folder whose save still runs (its process holds the lock) is left to that save."""
    if (directory / STAGING).is_dir() and os.access(directory, os.W_OK):
        with locked(directory, exclusive=True, wait=False) as held:
            if held:
                finish_interrupted_save(directory)


def committed(directory: Path, file_name: str) -> Path:
    """Where the checkpoint's ``file_name`` is now: in the staging folder while a committed save has not
    renamed it into place (that save is under way, or was interrupted in a folder we may not write to)."""
    staged = directory / STAGING / file_name
    if (directory / STAGING / COMMIT_RECORD).is_file() and staged.is_file():
        return staged
    return directory / file_name


def read_current(directory: Path, file_name: str) -> bytes:
    """The bytes of the checkpoint's ``file_name``, from where it is now."""
    try:
        return committed(directory, file_name).read_bytes()
    except FileNotFoundError:  # a writer renamed it into place as we looked
        return (directory / file_name).read_bytes()


def read_files(directory: Path) -> tuple[bytes, bytes]:
    """The bytes of the config and of the weights."""
    return read_current(directory, CONFIG_FILE), read_current(directory, WEIGHTS_FILE)


def checksum(weights: bytes, peft_config: dict[str, Any]) -> str:
    """SHA-256 of the weights file and the method's config: a damaged or edited file does not load."""
    return hashlib.sha256(weights + json.dumps(peft_config, sort_keys=True).encode()).hexdigest()


def adapter_files(
    model: PeftModel, adapter_name: str | None = None, base_model_name: str | None = None
) -> dict[str, bytes]:
    """The contents of both checkpoint files for one adapter, every check done."""
    if base_model_name is not None and not isinstance(base_model_name, str):
        raise TypeError(
            f"base_model_name is a portable name such as 'bert-base-uncased', got {base_model_name!r}."
        )
    name = adapter_name or model.active_adapter
    if not model.peft_config:
        raise ValueError(
            "this model has no adapter left to save (merge_and_unload(), unload() or delete_adapter() removed "
            "them); save a model that carries one, or save the merged base model with its own save_pretrained."
        )
    if name not in model.peft_config:
        raise ValueError(f"no adapter named {name!r}; this model has: {', '.join(model.peft_config)}.")
    refuse_meta(
        model.base_model, "its adapter has no values either: add it to a base model loaded with weights"
    )
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.adapter_state_dict(name).items()}
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise ValueError(
            f"adapter {name!r} holds NaN or infinite values ({broken[0]}); training diverged, "
            f"lower the learning rate. Nothing was saved."
        )
    peft_config = model.peft_config[name].to_dict()
    created_with = model.config_at_creation[name]
    if peft_config != created_with:
        changed = ", ".join(
            f"{k}: {created_with.get(k)!r} -> {peft_config.get(k)!r}"
            for k in sorted(set(peft_config) | set(created_with))
            if peft_config.get(k) != created_with.get(k)
        )
        raise ValueError(
            f"peft_config[{name!r}] was changed after adapter {name!r} was made ({changed}); its weights "
            f"follow the old values, so the checkpoint could not be loaded. Set the field back, or add a new "
            f"adapter with the new config. Nothing was saved."
        )
    weights = save_safetensors(tensors)
    meta = {
        "format_version": FORMAT_VERSION,
        "peft_config": peft_config,
        "base_model_shape": model_shape(model.base_model),
        **model.base_model_record,
        "base_model_name": base_model_name,
        "sha256": checksum(weights, peft_config),
    }
    return {WEIGHTS_FILE: weights, CONFIG_FILE: (json.dumps(meta, indent=2) + "\n").encode()}


def save_folder(directory: str | os.PathLike) -> Path:
    """``directory`` as a Path to save into (it may not exist yet), or a clear error."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"a checkpoint is saved into a folder named by a str or Path, got {directory!r}; "
            f"e.g. save_pretrained('my-adapter')."
        )
    if os.fspath(directory) == "":
        raise ValueError(
            "the folder to save into is '' (empty); name one, e.g. 'my-adapter', or '.' for this one."
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"{directory} is a file; a checkpoint is a folder (it holds {CONFIG_FILE} and {WEIGHTS_FILE}): "
            f"name a new folder or an existing one."
        )
    return directory


def first_missing(directory: Path) -> Path | None:
    """The outermost folder of ``directory``'s path that does not exist yet (what ``mkdir`` creates)."""
    missing = None
    for folder in [directory, *directory.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    """Replace ``files`` in ``directory`` as one unit (the steps are in this module's docstring).
    A failed save leaves the old pair in place and removes any folder it created itself."""
    created = first_missing(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_pair(directory, files)
    except BaseException as error:
        if created is not None and not (directory / CONFIG_FILE).exists():
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(error, OSError):
            advice = " Save into a folder you can write to." if error.errno in READ_ONLY else ""
            raise type(error)(
                f"could not save the adapter into {directory}: {error.strerror or error} "
                f"({error.filename or directory}); nothing was changed there.{advice}"
            ) from None
        raise
    return directory


def write_pair(directory: Path, files: dict[str, bytes]) -> None:
    """The save itself, in an existing folder, under its exclusive lock."""
    with locked(directory, exclusive=True):
        finish_interrupted_save(directory)
        staging = directory / STAGING
        try:
            staging.mkdir()
            for file_name, data in files.items():
                write_synced(staging / file_name, data)
            record = {file_name: hashlib.sha256(data).hexdigest() for file_name, data in files.items()}
            write_synced(staging / f"{COMMIT_RECORD}.partial", json.dumps(record).encode())
            os.replace(staging / f"{COMMIT_RECORD}.partial", staging / COMMIT_RECORD)
            sync_directory(staging)
            for file_name in files:
                os.replace(staging / file_name, directory / file_name)
            sync_directory(directory)
            shutil.rmtree(staging)
        except (
            BaseException
        ):  # an error or Ctrl-C: finish or discard now (a killed process: the next call does)
            with contextlib.suppress(OSError):
                finish_interrupted_save(directory)
            raise


def checkpoint_folder(directory: str | Path) -> Path:
    """``directory`` as a Path to an existing checkpoint folder, or a clear error."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"an adapter checkpoint is named by its folder (a str or Path), got {directory!r}; give the "
            f"folder that save_pretrained wrote, the one holding {CONFIG_FILE}."
        )
    directory = Path(directory)
    if directory.is_file():
        raise ValueError(
            f"{directory} is a file; give the folder, not the file: {directory.parent} holds the checkpoint "
            f"({CONFIG_FILE} and {WEIGHTS_FILE} together)."
        )
    if not directory.is_dir():
        raise FileNotFoundError(f"adapter checkpoint directory {directory} does not exist.")
    recover(directory)
    missing = [
        f
        for f in (CONFIG_FILE, WEIGHTS_FILE)
        if not (directory / f).is_file() and not committed(directory, f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"adapter checkpoint {directory} is incomplete: {', '.join(missing)} missing "
            f"(save_adapter writes {CONFIG_FILE} and {WEIGHTS_FILE})."
        )
    return directory


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json``, or a clear error if the checkpoint is incomplete or damaged."""
    directory = checkpoint_folder(directory)
    return parse_config(directory, read_current(directory, CONFIG_FILE))


def parse_config(directory: Path, text: bytes) -> dict[str, Any]:
    """``adapter_config.json``'s contents, checked field by field."""
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{directory / CONFIG_FILE} is not valid JSON ({error}); the checkpoint is damaged."
        ) from None
    absent = [k for k in ("peft_config", "base_model_shape") if not isinstance(meta, dict) or k not in meta]
    if absent:
        raise ValueError(
            f"{directory / CONFIG_FILE} lacks {', '.join(absent)}: it was not written by save_adapter."
        )
    shape, version = meta["base_model_shape"], meta.get("format_version", 1)
    if (
        not isinstance(meta["peft_config"], dict)
        or not isinstance(shape, dict)
        or not all(isinstance(v, int) for v in shape.values())
        or not isinstance(version, int)
    ):
        raise ValueError(
            f"{directory / CONFIG_FILE} has fields of the wrong type; it is damaged. Save the adapter again."
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{directory} uses checkpoint format {meta['format_version']}; this adapterlib reads up to "
            f"{FORMAT_VERSION}. Upgrade adapterlib."
        )
    restore = (
        f"if you trust these files as they are, adapterlib.checkpoint.add_checksum({str(directory)!r}) "
        f"records their SHA-256"
    )
    later = [field for field in FORMAT_2_ONLY if field in meta]
    if "format_version" not in meta and later:
        raise ValueError(
            f"{directory / CONFIG_FILE} has no format_version (format 1) but records {', '.join(later)}, which "
            f"only format {FORMAT_VERSION} writes: it was edited, and its weights cannot be checked. Save the "
            f"adapter again from the model that trained it; {restore}."
        )
    if version >= 2 and not isinstance(meta.get("sha256"), str):
        raise ValueError(
            f"{directory / CONFIG_FILE} has no sha256, which every format-{version} checkpoint records: it was "
            f"edited, and an edit to the weights or the config cannot be detected without it. Save the adapter "
            f"again from the model that trained it; {restore}."
        )
    return meta


def matches_checksum(meta: dict[str, Any], weights: bytes) -> bool:
    recorded = meta.get("sha256")
    return recorded is None or checksum(weights, meta["peft_config"]) == recorded


def read_pair(directory: Path) -> tuple[dict[str, Any], bytes]:
    """Config and weights that belong together: read again under a shared lock when the first
    read caught a writer between its two renames (their SHA-256 does not match)."""
    with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        meta_text, weights = read_files(directory)  # OSError: a writer renamed a file as we read it
        if matches_checksum(json.loads(meta_text), weights):
            return parse_config(directory, meta_text), weights
    try:
        with locked(directory, exclusive=False):
            meta_text, weights = read_files(directory)
    except OSError:  # a folder we cannot lock: what is there now is all there is
        meta_text, weights = read_files(directory)
    return parse_config(directory, meta_text), weights


def read_checkpoint(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and the tensors of the checkpoint in ``directory``, checked and belonging together."""
    directory = checkpoint_folder(directory)
    meta, weights = read_pair(directory)
    return meta, read_weights(directory, meta, weights)


def add_checksum(directory: str | Path) -> Path:
    """Record the SHA-256 of a checkpoint whose ``sha256`` field was removed, accepting its files as
    they are now. Only for files you trust: the checksum is what detects an edit."""
    directory = checkpoint_folder(directory)
    meta_text, weights = read_files(directory)
    meta = json.loads(meta_text.decode("utf-8"))
    if "format_version" not in meta:
        if not any(field in meta for field in FORMAT_2_ONLY):
            raise ValueError(
                f"{directory} is a format-1 checkpoint, which has no checksum; load it and save it again "
                f"to write format {FORMAT_VERSION}."
            )
        meta["format_version"] = FORMAT_VERSION  # removed with the checksum: the fields say format 2
    meta["sha256"] = checksum(weights, meta["peft_config"])
    config = (json.dumps(meta, indent=2) + "\n").encode()
    return write_files(directory, {WEIGHTS_FILE: weights, CONFIG_FILE: config})


def read_weights(directory: Path, meta: dict[str, Any], data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of ``adapter_model.safetensors``, checked against the recorded SHA-256 and for NaN."""
    path = directory / WEIGHTS_FILE
    if not matches_checksum(meta, data):
        raise ValueError(
            f"{path} or the peft_config in {CONFIG_FILE} differs from what was saved (the SHA-256 "
            f"recorded at saving does not match); the checkpoint is damaged or was edited. Save it again; if "
            f"you edited it on purpose and trust it, adapterlib.checkpoint.add_checksum({str(directory)!r}) "
            f"records its new SHA-256."
        )
    try:
        tensors = load_safetensors(data)
    except Exception as error:  # safetensors raises its own error types for every kind of damage
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}); it is truncated or damaged."
        ) from None
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{path} holds NaN or infinite values ({broken[0]}); it cannot be used.")
    return tensors


def keys_from_format_1(tensors: dict[str, torch.Tensor], base: nn.Module) -> dict[str, torch.Tensor]:
    """Rename format-1 keys (full module paths, e.g. ``bert.encoder.layer.3.output.LayerNorm.down.weight``)
    to format 2 (``layers.3.output.LayerNorm.down.weight``)."""
    paths = layer_paths(base)
    renamed = {}
    for key, tensor in tensors.items():
        if key.startswith("prefix_encoder."):
            key = "shared." + key.removeprefix("prefix_encoder.")
        renamed[relative_to_layer(key, paths)] = tensor
    return renamed


def refuse_meta(model: nn.Module, advice: str) -> None:
    """A model on the ``meta`` device has shapes but no weights: nothing to save or adapt."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError(
            f"the base model's weights are on the meta device (shapes without values, as under "
            f"torch.device('meta') or init_empty_weights); {advice}."
        )


SAMPLES_PER_TENSOR = 4


def base_samples(model: nn.Module) -> str | None:
    """A few evenly spaced values of each embedding table and Transformer layer parameter (those
    :func:`base_fingerprint` reads), as float32 bytes in base64; None on the ``meta`` device."""
    if any(p.is_meta for p in model.parameters()):
        return None
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    layers = [
        p
        for layer in find_layers(model)
        for name, p in layer.named_parameters()
        if "adapters" not in name.split(".")
    ]
    picked = []
    for parameter in tables + layers:
        values = parameter.detach().flatten()
        count = min(SAMPLES_PER_TENSOR, values.numel())
        index = torch.arange(count, device=values.device) * (values.numel() - 1) // max(count - 1, 1)
        picked.append(values[index].float().cpu())
    return base64.b64encode(torch.cat(picked).numpy().astype("<f4").tobytes()).decode()


def base_record(model: nn.Module) -> dict[str, str | None]:
    """What a checkpoint records of the base weights: two fingerprints (rounded to bfloat16 directly,
    and through float16 first, so that a float16 or bfloat16 copy matches its float32 original), the
    dtype, and a few values, which tell a float16 copy from a bfloat16 copy of the same weights."""
    return {
        "base_model_fingerprint": base_fingerprint(model),
        "base_model_fingerprint_float16": base_fingerprint(model, through=torch.float16),
        "base_model_dtype": str(next(find_layers(model)[0].parameters()).dtype).removeprefix("torch."),
        "base_model_samples": base_samples(model),
    }


def same_weights_in_another_dtype(recorded: dict[str, Any], ours: dict[str, str | None]) -> bool:
    r"""Whether the recorded values and ours are the same weights rounded to two half-precision dtypes.

    float16 keeps 11 significant bits and bfloat16 8, so a weight :math:`w` cast to each lands
    within :math:`2^{-9}|w|` and :math:`2^{-12}|w|` of it: the two copies differ by less than
    :math:`2^{-7}` of the value. Other weights, even a brief fine-tune, differ by far more."""
    if recorded.get("base_model_dtype") in (None, ours["base_model_dtype"]):
        return False
    if not isinstance(recorded.get("base_model_samples"), str) or ours["base_model_samples"] is None:
        return False
    saved, values = (
        torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.float32)
        for text in (recorded["base_model_samples"], ours["base_model_samples"])
    )
    return saved.shape == values.shape and torch.allclose(saved, values, rtol=2**-7, atol=1e-6)


def check_base(
    meta: dict[str, Any],
    base: nn.Module,
    fingerprints: dict[str, str | None],
    directory: Path,
    with_head: bool,
) -> None:
    """Refuse another shape; warn about other weights of the same shape (another dtype is the same weights)."""
    expected, actual = dict(meta["base_model_shape"]), model_shape(base)
    if with_head and "num_labels" in expected and "num_labels" not in actual:
        raise ValueError(
            f"adapter in {directory} was trained with a classification head ({expected['num_labels']} labels, "
            f"task_type SEQ_CLS) and {type(base).__name__} has none; load it onto a model with a head, e.g. "
            f"BertForSequenceClassification.from_pretrained(name, num_labels={expected['num_labels']})."
        )
    if not with_head:
        expected.pop("num_labels", None)
        actual.pop("num_labels", None)
    if expected != actual:
        differ = ", ".join(
            f"{k}: saved {expected.get(k)} vs model {actual.get(k)}"
            for k in sorted(set(expected) | set(actual))
            if expected.get(k) != actual.get(k)
        )
        raise ValueError(f"adapter in {directory} was trained on a base model of another shape ({differ}).")
    hashes = ("base_model_fingerprint", "base_model_fingerprint_float16")
    recorded = {k: meta.get(k) for k in hashes if meta.get(k) is not None}
    if (
        recorded
        and not any(fingerprints[k] == v for k, v in recorded.items())
        and not same_weights_in_another_dtype(meta, fingerprints)
    ):
        recorded, fingerprint = recorded["base_model_fingerprint"], fingerprints["base_model_fingerprint"]
        name = meta.get("base_model_name") or "an unnamed model"
        warnings.warn(
            f"adapter in {directory} was trained on {name} with weights fingerprint {recorded}; this base model "
            f"has the same shape but fingerprint {fingerprint}, so its weights differ and the adapter may "
            "not fit them.",
            DifferentBaseWarning,
            stacklevel=3,
        )
