"""``get_peft_model`` and the :class:`PeftModel` wrapper it returns.

The wrapper works like ``peft.PeftModel``: it holds the base model (``base_model``) with the
adapter modules inserted in place, freezes every base parameter, and forwards calls to it.
Several adapters can live on one frozen base; :meth:`PeftModel.set_adapter` switches between
them by name, and only the active adapter (with its own copy of the task head) is trainable.
For ``TaskType.SEQ_CLS`` the returned :class:`PeftModelForSequenceClassification` has an
explicit ``forward`` signature, which is what the Hugging Face ``Trainer`` inspects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .config import AdapterConfig, LoraConfig, PeftConfig, PrefixTuningConfig, TaskType
from .counting import print_trainable_parameters
from .inject import (
    attention_implementation,
    check_config,
    insert_adapter,
    insert_head,
    insert_lora,
    insert_prefix,
    is_adapted,
)
from .lora import LoraLinear
from .prefix import PrefixSelfAttention
from .sites import AdapterSite, check_adapter_name


class PeftModel(nn.Module):
    """A frozen base model with one or more named adapters, one of them active."""

    def __init__(self, model: nn.Module, config: PeftConfig, adapter_name: str = "default") -> None:
        super().__init__()
        self.base_model = model
        self.peft_config: dict[str, PeftConfig] = {}
        self.prefix_encoders = nn.ModuleDict()
        self.active_adapter: str | None = None
        self.add_adapter(adapter_name, config)

    def add_adapter(self, adapter_name: str, config: PeftConfig) -> None:
        """Insert a new adapter, make it the active one and the only trainable part."""
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} exists already; pick another name.")
        layers = check_config(self.base_model, config)
        if isinstance(config, AdapterConfig):
            insert_adapter(layers, config, adapter_name)
        elif isinstance(config, LoraConfig):
            insert_lora(layers, config, adapter_name)
        elif isinstance(config, PrefixTuningConfig):
            implementation = attention_implementation(self.base_model)
            self.prefix_encoders[adapter_name] = insert_prefix(layers, config, implementation)
        if config.task_type == TaskType.SEQ_CLS:
            insert_head(self.base_model, adapter_name)
        self.peft_config[adapter_name] = config
        self.train(self.base_model.training)  # new modules follow the base model's train/eval mode
        self.set_adapter(adapter_name)

    def set_adapter(self, adapter_name: str) -> None:
        """Activate ``adapter_name`` everywhere; freeze everything but its parameters."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"no adapter named {adapter_name!r}; this model has: {', '.join(self.peft_config)}.")
        if any(site.merged_adapter for site in self.sites(LoraLinear)):
            raise RuntimeError("a LoRA adapter is merged into the weights; call unmerge_adapter() before switching.")
        self.active_adapter = adapter_name
        self.requires_grad_(False)
        for site in self.sites(AdapterSite):
            site.active_adapter = adapter_name
            if adapter_name in site.adapters:
                site.adapters[adapter_name].requires_grad_(True)
        if adapter_name in self.prefix_encoders:
            self.prefix_encoders[adapter_name].requires_grad_(True)

    @property
    def active_config(self) -> PeftConfig:
        return self.peft_config[self.active_adapter]

    def sites(self, kind: type[nn.Module]) -> list[nn.Module]:
        return [m for m in self.base_model.modules() if isinstance(m, kind)]

    def adapter_state_dict(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """Only the tensors of one adapter (default: the active one), keyed by site."""
        name = adapter_name or self.active_adapter
        state = {}
        for path, module in self.base_model.named_modules():
            if isinstance(module, AdapterSite) and name in module.adapters:
                for key, tensor in module.adapters[name].state_dict().items():
                    state[f"{path}.{key}"] = tensor
        if name in self.prefix_encoders:
            for key, tensor in self.prefix_encoders[name].state_dict().items():
                state[f"prefix_encoder.{key}"] = tensor
        return state

    def merge_adapter(self) -> None:
        """Fold the active LoRA update into the frozen weights (inference at base-model cost)."""
        for site in self.sites(LoraLinear):
            site.merge()

    def unmerge_adapter(self) -> None:
        for site in self.sites(LoraLinear):
            site.unmerge()

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def print_trainable_parameters(self) -> None:
        print_trainable_parameters(self)

    @contextlib.contextmanager
    def prefixes_installed(self) -> Iterator[None]:
        """Hand each attention layer its slice of the active prefixes for one forward pass."""
        encoder = self.prefix_encoders[self.active_adapter] if self.active_adapter in self.prefix_encoders else None
        layers = self.sites(PrefixSelfAttention)
        if encoder is not None:
            for attention, prefix in zip(layers, encoder()):
                attention.prefix = prefix
        try:
            yield
        finally:
            for attention in layers:
                attention.prefix = None

    def forward(self, *args, **kwargs):
        with self.prefixes_installed():
            return self.base_model(*args, **kwargs)

    def __getattr__(self, name: str):
        """Fall back to the base model's attributes (``config``, ``device``...), as peft does."""
        try:
            return super().__getattr__(name)
        except AttributeError:
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
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels)
        return super().forward(**{k: v for k, v in inputs.items() if v is not None}, **kwargs)


def get_peft_model(model: nn.Module, config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    """Insert the method described by ``config`` into ``model`` and freeze the rest.

    Modifies ``model`` in place (as peft does) and returns the wrapper. On bad input it raises
    before touching the model. To put a second adapter on the same base, call
    ``peft_model.add_adapter(name, config)`` rather than ``get_peft_model`` again.
    """
    if isinstance(model, PeftModel) or is_adapted(model):
        raise ValueError(
            "this model already carries adapterlib modules; add another adapter with "
            "peft_model.add_adapter(name, config), or start again from a fresh base model."
        )
    is_classifier = getattr(config, "task_type", None) == TaskType.SEQ_CLS
    wrapper = PeftModelForSequenceClassification if is_classifier else PeftModel
    return wrapper(model, config, adapter_name)
