"""``get_peft_model`` and the :class:`PeftModel` wrapper it returns.

The wrapper works like ``peft.PeftModel``: it holds the base model (``base_model``) with the
adapter modules inserted in place, freezes every base parameter, and forwards calls to it.
Several adapters can live on one frozen base; :meth:`PeftModel.set_adapter` switches between
them by name, and only the active adapter (with its own copy of the task head) is trainable.
Every adapter's modules sit inside the base model, so calling the original model object
computes the same as calling the wrapper.

Every call that can fail checks first and changes nothing when it fails: a new adapter is
inserted completely or not at all, and the model keeps its active adapter and trainable parts.
For ``TaskType.SEQ_CLS`` the returned :class:`PeftModelForSequenceClassification` has an
explicit ``forward`` signature, which is what the Hugging Face ``Trainer`` inspects.

:func:`save_adapter` and :func:`load_adapter` live here, beside the class they save and build; the
files, records and checks they use are in :mod:`adapterlib.checkpoint_files`.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .checkpoint_files import (
    adapter_files,
    base_record,
    check_base,
    checkpoint_folder,
    keys_from_format_1,
    read_checkpoint,
    refuse_meta,
    save_folder,
    write_files,
)
from .config import PeftConfig, TaskType
from .counting import print_trainable_parameters
from .inject import find_layers, insert_head, is_adapted, layer_paths, relative_to_layer
from .methods import config_from_dict, method_of, methods
from .sites import AdapterSite, MergeableSite, check_adapter_name, remove_adapter_modules, shared_module

# Names a peft user may reach for that transformers' models answer with their own PEFT integration.
TRANSFORMERS_ADAPTER_METHODS = {
    "active_adapters": "active_adapter (one adapter is active at a time)",
    "disable_adapters": "`with model.disable_adapter():`",
    "enable_adapters": "the end of a `with model.disable_adapter():` block",
    "enable_peft_hotswap": "load_adapter(path, name) and set_adapter(name)",
    "get_adapter_state_dict": "adapter_state_dict()",
}


class PeftModel(nn.Module):
    """A frozen base model with one or more named adapters, one of them active."""

    def __init__(
        self,
        model: nn.Module,
        config: PeftConfig,
        adapter_name: str = "default",
        weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if isinstance(model, PeftModel) or is_adapted(model):
            raise ValueError(
                "this model already carries adapterlib modules; add another adapter with "
                "peft_model.add_adapter(name, config), or start again from a fresh base model."
            )
        super().__init__()
        self.base_model = model
        self.peft_config: dict[str, PeftConfig] = {}
        self.active_adapter: str | None = None
        self.disabled = False
        # Taken before any adapter exists or is merged: what checkpoints record and check.
        self.base_model_record = base_record(model)
        self.config_at_creation: dict[str, dict] = {}  # what save_pretrained checks the live config against
        self.add_adapter(adapter_name, config, weights=weights)

    # ------------------------------------------------------------ adding and removing adapters

    def add_adapter(
        self, adapter_name: str, config: PeftConfig, *, weights: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Insert a new adapter, make it the active one and the only trainable part.

        ``weights``: tensors to start from, keyed as :meth:`adapter_state_dict` keys them (how
        :func:`adapterlib.load_adapter` restores a checkpoint). On any error the model is left as it was.
        """
        config = copy.deepcopy(config)  # the model keeps its own: a config changed later changes nothing here
        method, layers = self._check_new_adapter(adapter_name, config)
        trainable = {parameter: parameter.requires_grad for parameter in self.parameters()}
        previous = self.active_adapter
        try:
            method.insert(self.base_model, layers, config, adapter_name)
            if config.task_type == TaskType.SEQ_CLS:
                insert_head(self.base_model, adapter_name)
            self.peft_config[adapter_name] = config
            self.config_at_creation[adapter_name] = config.to_dict()
            self.train(self.base_model.training)  # new modules follow the base model's train/eval mode
            self.set_adapter(adapter_name)
            if weights is not None:
                self._copy_weights(adapter_name, weights)
        except BaseException:
            remove_adapter_modules(self.base_model, adapter_name)
            self.peft_config.pop(adapter_name, None)
            self.config_at_creation.pop(adapter_name, None)
            self.active_adapter = previous
            for site in self.sites(AdapterSite):
                site.active_adapter = previous
            for parameter, flag in trainable.items():
                parameter.requires_grad_(flag)
            raise

    def _check_new_adapter(self, adapter_name: str, config: PeftConfig):
        """Everything that can be known to fail before the model is touched."""
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} exists already; pick another name.")
        method = method_of(config)
        config.validate()
        self._refuse_while_disabled("adding an adapter")
        self._refuse_while_merged("adding an adapter")
        layers = find_layers(self.base_model)
        if config.task_type == TaskType.SEQ_CLS and not isinstance(
            getattr(self.base_model, "classifier", None), nn.Module
        ):
            raise ValueError(
                f"task_type SEQ_CLS needs a model with a `classifier` head such as BertForSequenceClassification; "
                f"{type(self.base_model).__name__} has none. Use task_type=None for a bare encoder."
            )
        method.check(self.base_model, layers, config)
        return method, layers

    def _copy_weights(self, adapter_name: str, weights: dict[str, torch.Tensor]) -> None:
        target = self.adapter_state_dict(adapter_name)
        missing, unexpected = sorted(set(target) - set(weights)), sorted(set(weights) - set(target))
        wrong_shape = [k for k in target if k in weights and weights[k].shape != target[k].shape]
        if missing or unexpected or wrong_shape:
            details = "; ".join(
                f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for what, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("other shape", wrong_shape),
                )
                if keys
            )
            raise ValueError(f"the weights do not match the adapter their config describes ({details}).")
        with torch.no_grad():
            for key, tensor in target.items():
                tensor.copy_(weights[key])

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter's modules; a site left empty gives way to its base module again.
        Deleting the active adapter activates the first one left (or none)."""
        self._check_known(adapter_name)
        self._refuse_while_disabled("deleting an adapter")
        self._refuse_while_merged("deleting an adapter")
        remove_adapter_modules(self.base_model, adapter_name)
        del self.peft_config[adapter_name]
        del self.config_at_creation[adapter_name]
        if self.active_adapter == adapter_name:
            remaining = next(iter(self.peft_config), None)
            if remaining is None:
                self.active_adapter = None
                self.requires_grad_(False)
            else:
                self.set_adapter(remaining)

    # ------------------------------------------------------------ switching

    def set_adapter(self, adapter_name: str) -> None:
        """Activate ``adapter_name`` everywhere; freeze everything but its parameters."""
        self._check_known(adapter_name)
        self._refuse_while_disabled("switching adapters")
        self._refuse_while_merged("switching adapters")
        self.active_adapter = adapter_name
        self.requires_grad_(False)
        for site in self.sites(AdapterSite):
            site.active_adapter = adapter_name
            if adapter_name in site.adapters:
                site.adapters[adapter_name].requires_grad_(True)
        shared = shared_module(self.base_model, adapter_name)
        if shared is not None:
            shared.requires_grad_(True)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """``with model.disable_adapter():`` computes the base model alone (its original head too).

        Inside the block the adapters cannot change: adding, loading, deleting, switching,
        merging and unloading are refused. Leaving a block restores what it found, so a block
        nested in another leaves the adapters disabled until the outer block ends.
        """
        self._refuse_while_merged("disabling adapters")
        found = [(site, site.active_adapter) for site in self.sites(AdapterSite)]
        was_disabled = self.disabled
        for site, _ in found:
            site.active_adapter = None
        self.disabled = True
        try:
            yield
        finally:
            self.disabled = was_disabled
            for site, active in found:
                site.active_adapter = active

    @property
    def active_config(self) -> PeftConfig:
        if self.active_adapter is None:
            raise ValueError(
                "no adapter is active: this model has none left (merge_and_unload(), unload() or "
                "delete_adapter() removed them); add or load one first."
            )
        return self.peft_config[self.active_adapter]

    def sites(self, kind: type[nn.Module]) -> list[nn.Module]:
        return [m for m in self.base_model.modules() if isinstance(m, kind)]

    def _check_known(self, adapter_name: str) -> None:
        if not isinstance(adapter_name, str):
            raise TypeError(
                f"an adapter is named by one string, got {adapter_name!r}; "
                f"one adapter is active at a time here."
            )
        if adapter_name not in self.peft_config:
            have = ", ".join(self.peft_config) or "none"
            raise ValueError(f"no adapter named {adapter_name!r}; this model has: {have}.")

    def _refuse_while_disabled(self, action: str) -> None:
        if self.disabled:
            raise RuntimeError(
                f"adapters are disabled by `with model.disable_adapter():`; leave the with-block before {action}."
            )

    def _refuse_while_merged(self, action: str) -> None:
        merged = [site.merged_adapter for site in self.sites(MergeableSite) if site.merged_adapter]
        if merged:
            raise RuntimeError(
                f"adapter {merged[0]!r} is merged into the weights; call unmerge_adapter() before {action}."
            )

    # ------------------------------------------------------------ merging

    def _check_mergeable(self, call: str, advice: str) -> None:
        """The active adapter's method must fold into the weights, and adapters must not be disabled."""
        if self.active_adapter is None:
            raise ValueError("no adapter is active; add or load one first.")
        self._check_known(self.active_adapter)
        method = method_of(self.active_config)
        if not method.mergeable:
            raise ValueError(
                f"{method.label} adds computation that cannot be folded into the base weights; {advice}."
            )
        if self.disabled:
            raise RuntimeError(f"{call}() inside disable_adapter(): leave the with-block first.")

    def merge_adapter(self) -> None:
        """Fold the active adapter's update into the frozen weights (inference at base-model cost)."""
        merging = ", ".join(m.label for m in methods() if m.mergeable)
        self._check_mergeable("merge_adapter", f"the methods that merge are {merging}")
        self._refuse_while_merged("merging again")
        for site in self.sites(MergeableSite):
            site.merge()

    def unmerge_adapter(self) -> None:
        """Take the merged adapter's update out of the weights again; warns when nothing is merged."""
        sites = self.sites(MergeableSite)
        if not any(site.merged_adapter for site in sites):
            warnings.warn(
                "unmerge_adapter(): no adapter is merged, so nothing changed.", UserWarning, stacklevel=2
            )
            return
        for site in sites:
            site.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """The base model with the active adapter folded into its weights and every adapterlib
        module removed (the active adapter's trained head stays). Only for methods that merge."""
        self._check_mergeable(
            "merge_and_unload", "keep the PeftModel, or call unload() to get the base model without it"
        )
        if not any(site.merged_adapter for site in self.sites(MergeableSite)):
            self.merge_adapter()
        return self._unload(keep=self.active_adapter)

    def unload(self) -> nn.Module:
        """The base model with every adapterlib module removed and nothing merged."""
        self._refuse_while_disabled("unloading")
        self._refuse_while_merged("unloading")
        return self._unload(keep=None)

    def _unload(self, keep: str | None) -> nn.Module:
        for name in [n for n in self.peft_config if n != keep]:
            remove_adapter_modules(self.base_model, name)
        if keep is not None:
            remove_adapter_modules(self.base_model, keep, keep_head=True)
        self.peft_config.clear()
        self.config_at_creation.clear()
        self.active_adapter = None
        return self.base_model

    # ------------------------------------------------------------ saving

    def adapter_state_dict(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """Only the tensors of one adapter (default: the active one), named relative to where they sit.

        ``layers.{i}.{site}.{tensor}`` inside the i-th Transformer layer (``layers.0.attention.self.query.A``),
        ``{site}.{tensor}`` outside the layers (``classifier.weight``), ``shared.{tensor}`` for a module
        the adapter's sites share. A site's name skips the ``base_layer`` of sites around it, so the
        names do not depend on which other adapters are installed.
        """
        name = adapter_name or self.active_adapter
        self._check_known(name)
        paths = layer_paths(self.base_model)
        state: dict[str, torch.Tensor] = {}
        for path, module in self.base_model.named_modules():
            if (
                not isinstance(module, AdapterSite)
                or name not in module.adapters
                or "adapters" in path.split(".")
            ):
                continue
            site = relative_to_layer(path, paths)
            for key, tensor in module.adapters[name].state_dict().items():
                state[f"{site}.{key}"] = tensor
        shared = shared_module(self.base_model, name)
        if shared is not None:
            state.update({f"shared.{key}": tensor for key, tensor in shared.state_dict().items()})
        return state

    def save_pretrained(
        self,
        save_directory: str | Path,
        selected_adapters: list[str] | None = None,
        base_model_name: str | None = None,
    ) -> None:
        """Save adapters only, as peft does: ``default`` into ``save_directory``, any other into
        ``save_directory/<name>``."""
        save_directory = save_folder(save_directory)
        if isinstance(selected_adapters, str):
            raise TypeError(f"selected_adapters is a list of names, e.g. [{selected_adapters!r}].")
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        if not names:
            raise ValueError(
                "no adapter to save: this model has no adapter left (merge_and_unload(), unload() or delete_adapter() "
                "removed them)."
                if not self.peft_config
                else "selected_adapters is empty; name at least one adapter, e.g. ['default']."
            )
        for name in names:
            self._check_known(name)
        files = {
            name: adapter_files(self, name, base_model_name) for name in names
        }  # every check before any write
        for name, contents in files.items():
            write_files(save_directory if name == "default" else save_directory / name, contents)

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, model_id: str | Path, adapter_name: str = "default", is_trainable: bool = False
    ) -> PeftModel:
        """Put a saved adapter onto a fresh base model; frozen for inference unless ``is_trainable``."""
        peft_model = load_adapter(model, model_id, adapter_name)
        if not is_trainable:
            peft_model.requires_grad_(False)
        return peft_model

    def load_adapter(self, model_id: str | Path, adapter_name: str, is_trainable: bool = False) -> None:
        """Add a saved adapter under ``adapter_name``. The active adapter stays active, as in peft;
        with ``is_trainable`` the loaded adapter becomes the active, trainable one (only the active
        adapter trains here)."""
        self._refuse_while_disabled("loading an adapter")
        previous = self.active_adapter
        inference_mode = not any(p.requires_grad for p in self.parameters())  # as from_pretrained leaves it
        load_adapter(self, model_id, adapter_name)
        if not is_trainable and previous is not None:
            self.set_adapter(previous)
        if inference_mode and not is_trainable:
            self.requires_grad_(False)

    # ------------------------------------------------------------ the rest

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def print_trainable_parameters(self) -> None:
        print_trainable_parameters(self)

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def __getattr__(self, name: str):
        """Fall back to the base model's attributes (``config``, ``device``...), as peft does, except
        transformers' own adapter methods, which would act on the base model behind our back."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in TRANSFORMERS_ADAPTER_METHODS:
                raise AttributeError(
                    f"PeftModel has no {name}; use {TRANSFORMERS_ADAPTER_METHODS[name]}."
                ) from None
            return getattr(super().__getattr__("base_model"), name)


class PeftModelForSequenceClassification(PeftModel):
    """A :class:`PeftModel` whose ``forward`` lists the inputs the ``Trainer`` may pass."""

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ):
        inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
        )
        return super().forward(**{k: v for k, v in inputs.items() if v is not None}, **kwargs)


def get_peft_model(model: nn.Module, config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    """Insert the method described by ``config`` into ``model`` and freeze the rest.

    Modifies ``model`` in place (as peft does) and returns the wrapper. On bad input it raises
    and leaves ``model`` as it was. To put a second adapter on the same base, call
    ``peft_model.add_adapter(name, config)`` rather than ``get_peft_model`` again.
    """
    return wrap_model(model, config, adapter_name)


def wrap_model(
    model: nn.Module,
    config: PeftConfig,
    adapter_name: str = "default",
    weights: dict[str, torch.Tensor] | None = None,
) -> PeftModel:
    """:func:`get_peft_model`, optionally starting the adapter from saved ``weights``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected a torch nn.Module (a Hugging Face BERT model such as BertForSequenceClassification), "
            f"got {type(model).__name__}."
        )
    if any(type(module).__module__.split(".")[0] == "peft" for module in model.modules()):
        raise ValueError(
            "this model is already wrapped by peft; pass the base model (a freshly loaded one, or what "
            "peft's unload() returns)."
        )
    is_classifier = getattr(config, "task_type", None) == TaskType.SEQ_CLS
    wrapper = PeftModelForSequenceClassification if is_classifier else PeftModel
    return wrapper(model, config, adapter_name, weights)


# ------------------------------------------------------------ adapter-only checkpoints


def save_adapter(
    model: PeftModel,
    directory: str | Path,
    adapter_name: str | None = None,
    base_model_name: str | None = None,
) -> Path:
    """Write one adapter (default: the active one) of ``model`` into ``directory``.

    Everything is computed and checked before a file is written; each file is replaced whole.
    """
    folder = save_folder(directory)
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"save_adapter needs the PeftModel returned by get_peft_model, got {type(model).__name__}."
        )
    return write_files(folder, adapter_files(model, adapter_name, base_model_name))


def base_fingerprints(model: PeftModel | nn.Module) -> dict[str, str | None]:
    """The record of the base weights as they were before any adapter was added."""
    return model.base_model_record if isinstance(model, PeftModel) else base_record(model)


def load_adapter(model: nn.Module, directory: str | Path, adapter_name: str = "default") -> PeftModel:
    """Put a saved adapter onto ``model``, a fresh base model or a PeftModel to add it to, and
    make it the active adapter.

    The files, the base model's shape and the tensors are checked before anything changes; on
    any error the model is left as it was.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"the first argument is the base model (a torch nn.Module such as BertForSequenceClassification), "
            f"got {type(model).__name__}."
        )
    base = model.base_model if isinstance(model, PeftModel) else model
    refuse_meta(base, "load the weights first, e.g. with from_pretrained(name) and no device_map")
    directory = checkpoint_folder(directory)
    meta, tensors = read_checkpoint(directory)
    config = config_from_dict(meta["peft_config"])
    check_base(
        meta, base, base_fingerprints(model), directory, with_head=config.task_type == TaskType.SEQ_CLS
    )
    if meta.get("format_version", 1) == 1:
        tensors = keys_from_format_1(tensors, base)
    try:
        if isinstance(model, PeftModel):
            model.add_adapter(adapter_name, config, weights=tensors)
            return model
        return wrap_model(model, config, adapter_name, weights=tensors)
    except ValueError as error:
        raise ValueError(f"{directory}: {error}") from None
