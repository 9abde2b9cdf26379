r"""One batch, many tasks: every example goes through its own task's adapter and its own head.

Several task adapters on one frozen base (:meth:`PeftModel.add_adapter`) are normally used one
at a time: :meth:`PeftModel.set_adapter` names the adapter that every site runs. A server that
answers requests of several tasks would then split each batch by task and run the base once per
task. Most methods do not need that: their change to an example's hidden state depends on that
example alone, so one batch can hold examples of every task. This is what peft offers with
``model(..., adapter_names=[...])`` (its LoRA layers' ``_mixed_batch_forward``), here for every
method whose sites act example by example.

How (:func:`routed`): for the length of a ``with`` block, every adapter site of the model gets a
forward that splits the batch by the adapter named for each example and puts the results back in
the batch's order. A site computes, for the examples of adapter :math:`t`,

* LoRA and DoRA (an added update, :math:`y = W x + \Delta_t(x)`): :math:`W x` once for the whole
  batch, then each task's update on its own examples, added to their rows (as peft does);
* every other site (bottleneck adapter, parallel adapter, BitFit, (IA)³, the head): the site's
  own computation with adapter :math:`t` active, on the examples of :math:`t`.

An example whose adapter has nothing at a site gets the base module there. Nothing in the model
is changed: the sites' own forwards come back when the block ends.

Which methods cannot share a batch this way:

* prefix tuning: it puts its task's keys and values (``n`` of them per layer) in front of the
  attention, so examples of two tasks attend over different keys, of different numbers; run
  prefix-tuned tasks in batches of their own (``set_adapter``);
* any adapter merged into the weights: the merged weights are shared by every example of the
  batch; call ``unmerge_adapter()`` first.

Heads of different sizes (TREC's 6 classes beside SST-2's 2, :func:`set_head`) give
:class:`MixedOutput`: one ``[batch, C_max]`` tensor in which an example's classes beyond its
task's :math:`C_t` hold :math:`-\infty`. Then ``argmax`` predicts, ``softmax`` gives 0 to the
missing classes, and ``F.cross_entropy(logits, labels)`` equals the mean over examples of each
one's loss under its own head: :math:`e^{-\infty} = 0` adds nothing to the normaliser.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import TaskType
from .methods.adapter import BottleneckSite
from .methods.bitfit import BitFitSite
from .methods.ia3 import IA3Linear
from .methods.lora import LoraLinear
from .methods.parallel import ParallelAdapterSite
from .methods.prefix import PrefixSelfAttention
from .peft_model import PeftModel
from .sites import AdapterSite, HeadSite, MergeableSite

# Sites whose output for one example depends on that example alone.
EXAMPLE_WISE_SITES = (LoraLinear, BottleneckSite, BitFitSite, IA3Linear, ParallelAdapterSite, HeadSite)
REFUSED_SITES = {
    PrefixSelfAttention: (
        "prefix tuning puts its task's keys and values in front of every attention layer, so examples of "
        "different tasks attend over different keys; run prefix-tuned tasks in batches of their own (set_adapter)"
    )
}


@dataclass
class MixedOutput:
    """Each example's logits from its own task's head, padded with ``-inf`` to the widest head.

    ``logits``: ``[batch, C_max]``; row ``i`` holds example ``i``'s ``num_classes[i]`` logits, then
    ``-inf``. ``num_classes``: ``[batch]``, the size of each example's head.
    """

    logits: torch.Tensor
    num_classes: torch.Tensor

    def example_logits(self, index: int) -> torch.Tensor:
        """Example ``index``'s logits, exactly the classes of its task."""
        return self.logits[index, : int(self.num_classes[index])]

    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)


@dataclass
class Route:
    """Which adapter each example of the batch goes through.

    Sites can sit inside sites (BitFit around a LoRA-wrapped Linear): an outer site that splits
    the batch calls the inner one with some of the rows only. ``rows`` holds the batch rows of the
    examples flowing through now, so the inner site groups exactly those.
    """

    adapter_names: list[str]
    rows: torch.Tensor  # the batch rows of the examples the current call holds, in order
    num_classes: torch.Tensor | None = None  # filled in by the head while the batch runs

    def groups(self, site: AdapterSite) -> list[tuple[str | None, torch.Tensor]]:
        """``(name active at this site, positions in the current call)``; the examples whose adapter
        has nothing at this site form one group under None (the base module)."""
        names = [self.adapter_names[row] for row in self.rows.tolist()]
        here = [name if name in site.adapters else None for name in names]
        return [
            (name, torch.tensor([i for i, n in enumerate(here) if n == name])) for name in dict.fromkeys(here)
        ]

    @contextlib.contextmanager
    def narrowed(self, positions: torch.Tensor) -> Iterator[None]:
        """While a site runs on the examples at ``positions`` of the current call."""
        previous, self.rows = self.rows, self.rows[positions]
        try:
            yield
        finally:
            self.rows = previous


def set_head(model: PeftModel, adapter_name: str, num_classes: int) -> None:
    """Give adapter ``adapter_name`` a fresh head of ``num_classes`` outputs (TREC's 6 on a base
    made with 2), initialised as BERT initialises its classifier and trainable when the adapter is.

    The model's own ``config.num_labels`` stays the base head's: compute the loss of such a head
    from the logits (``F.cross_entropy(logits, labels)``), never by passing ``labels`` to the model.
    """
    model._check_known(adapter_name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    head_site = getattr(model.base_model, "classifier", None)
    if not isinstance(head_site, HeadSite) or adapter_name not in head_site.adapters:
        raise ValueError(
            f"adapter {adapter_name!r} has no classification head; add it with task_type=TaskType.SEQ_CLS."
        )
    old = head_site.adapters[adapter_name]
    if not isinstance(old, nn.Linear):
        raise TypeError(
            f"set_head replaces a Linear head; adapter {adapter_name!r} has a {type(old).__name__}."
        )
    head = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)
    nn.init.normal_(head.weight, std=getattr(model.base_model.config, "initializer_range", 0.02))
    nn.init.zeros_(head.bias)
    head.train(old.training).requires_grad_(old.weight.requires_grad)
    head_site.adapters[adapter_name] = head


def check_route(model: PeftModel, adapter_names: Sequence[str]) -> None:
    """Everything that can be refused before the batch runs; one line each."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PeftModel (from get_peft_model), got {type(model).__name__}.")
    if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)) or not adapter_names:
        raise TypeError(f"adapter_names is a list with one adapter name per example, got {adapter_names!r}.")
    for name in dict.fromkeys(adapter_names):
        model._check_known(name)
    if model.disabled:
        raise RuntimeError("a mixed batch inside disable_adapter(): leave the with-block first.")
    merged = [site.merged_adapter for site in model.sites(MergeableSite) if site.merged_adapter]
    if merged:
        raise RuntimeError(
            f"adapter {merged[0]!r} is merged into the weights, which every example of a batch shares; "
            "call unmerge_adapter() first."
        )
    for site in model.sites(AdapterSite):
        used = [name for name in adapter_names if name in site.adapters]
        if used and not isinstance(site, EXAMPLE_WISE_SITES):
            reason = REFUSED_SITES.get(
                type(site), f"its {type(site).__name__} sites are not known to act example by example"
            )
            raise ValueError(f"adapter {used[0]!r} cannot share a batch with other tasks: {reason}.")


@contextlib.contextmanager
def routed(model: PeftModel, adapter_names: Sequence[str]) -> Iterator[Route]:
    """Within the block, a call of ``model`` on a batch sends example ``i`` through adapter
    ``adapter_names[i]`` at every site; the sites' own forwards come back at the end."""
    check_route(model, adapter_names)
    route = Route(list(adapter_names), torch.arange(len(adapter_names)))
    sites = model.sites(AdapterSite)
    try:
        for site in sites:
            site.forward = functools.partial(routed_forward, site, route)
        yield route
    finally:
        for site in sites:
            site.__dict__.pop("forward", None)


@contextlib.contextmanager
def active(site: AdapterSite, name: str | None) -> Iterator[None]:
    previous, site.active_adapter = site.active_adapter, name
    try:
        yield
    finally:
        site.active_adapter = previous


def take(value, positions: torch.Tensor, batch: int):
    """The examples at ``positions`` of a batch-first tensor; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[positions.to(value.device)]
    return value


def routed_forward(site: AdapterSite, route: Route, *args, **kwargs):
    """One site's computation for a batch of many tasks (see the module's docstring)."""
    own_forward = type(site).forward
    groups = route.groups(site)
    if len(groups) == 1:  # one adapter for every example here: the site's own forward
        with active(site, groups[0][0]):
            output = own_forward(site, *args, **kwargs)
        return padded_logits(route, groups, [output])[0] if isinstance(site, HeadSite) else output
    if isinstance(site, LoraLinear):  # W x once, then each task's update added to its rows
        (x,) = args
        with active(site, None):
            y = own_forward(site, x)
        for name, positions in groups:
            if name is not None:
                positions = positions.to(x.device)
                y = y.index_add(0, positions, site.adapters[name](x[positions]).to(y.dtype))
        return y
    batch = len(route.rows)
    outputs = []
    for name, positions in groups:
        with active(site, name), route.narrowed(positions):
            sub_args = [take(a, positions, batch) for a in args]
            sub_kwargs = {k: take(v, positions, batch) for k, v in kwargs.items()}
            outputs.append(own_forward(site, *sub_args, **sub_kwargs))
    if isinstance(site, HeadSite):
        outputs = padded_logits(route, groups, outputs)
    order = torch.cat([positions for _, positions in groups]).to(outputs[0].device)
    return torch.cat(outputs)[torch.argsort(order)]


def padded_logits(route: Route, groups, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every group's logits padded with ``-inf`` to the widest head; the head sizes go to ``route``."""
    width = max(output.shape[-1] for output in outputs)
    device = outputs[0].device
    route.num_classes = torch.zeros(len(route.adapter_names), dtype=torch.long, device=device)
    for (_, positions), output in zip(groups, outputs):
        route.num_classes[route.rows[positions].to(device)] = output.shape[-1]
    return [F.pad(output, (0, width - output.shape[-1]), value=-math.inf) for output in outputs]


def mixed_forward(model: PeftModel, adapter_names: Sequence[str], **inputs: torch.Tensor) -> MixedOutput:
    """Logits of a batch whose example ``i`` belongs to the task of adapter ``adapter_names[i]``.

    ``inputs``: what the model takes (``input_ids``, ``attention_mask``...), without ``labels``
    (compute the loss from the returned logits). Every adapter named must have its own head.
    """
    if "labels" in inputs:
        raise ValueError(
            "mixed_forward takes no labels: heads differ in size; use "
            "F.cross_entropy(output.logits, labels) on the returned logits."
        )
    check_route(model, adapter_names)
    batch = next((v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor)), None)
    if batch is not None and len(adapter_names) != batch:
        raise ValueError(
            f"adapter_names names {len(adapter_names)} adapters for a batch of {batch} examples; name one per example."
        )
    for name in dict.fromkeys(adapter_names):
        if model.peft_config[name].task_type != TaskType.SEQ_CLS:
            raise ValueError(
                f"adapter {name!r} has no classification head; add it with task_type=TaskType.SEQ_CLS."
            )
    with routed(model, adapter_names) as route:
        logits = model(**inputs).logits
    return MixedOutput(logits, route.num_classes)
