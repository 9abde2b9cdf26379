"""Two more levers on the adapter's CPU training step: no dropout in the frozen base, and torch.compile.

The adapter (r=16, the default) trains with every weight of the base frozen, yet the base's dropout
layers still draw a random mask for every activation they touch. Switching them off (p=0) keeps the
adapter's own dropout and changes what is trained: the base no longer regularises it, so adopting
it would need its own accuracy runs. ``torch.compile`` fuses the step's small operations into
generated kernels; it compiles once per batch shape, and those seconds are timed apart.

Variants, each one AdamW step under bf16 autocast (the default precision) at batch 32 x 64 tokens,
run side by side in interleaved rounds (``speed.py``): ``adapter``; ``adapter-again`` (a second copy,
the control); ``adapter-no-base-dropout``; ``adapter-compiled``. Ratios to ``adapter`` are medians of
per-round ratios with bootstrap 95% intervals. Writes ``benchmarks/levers.json``.

    python benchmarks/levers.py --rounds 30
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from speed import build, interleaved, make_batch, print_section, summary
from stats import load_average, machine_facts
from torch import nn

Step = Callable[[dict[str, torch.Tensor]], None]


def without_base_dropout(model: nn.Module) -> nn.Module:
    """Set p=0 in every dropout layer outside the inserted adapters (which keep their own)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and ".adapters." not in name:
            module.p = 0.0
    return model


def adapter_step(model: nn.Module) -> Step:
    """One bf16-autocast AdamW step on ``model``, whose adapter weights alone are trainable."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step(batch: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()

    return step


def compiled_step(batch: dict[str, torch.Tensor]) -> tuple[Step, float]:
    """The adapter step with the model under ``torch.compile``, and the seconds its first call took."""
    model = build("adapter")
    compiled = torch.compile(model)
    step = adapter_step(compiled)
    start = time.perf_counter()
    step(batch)
    return step, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).with_name("levers.json")))
    args = parser.parse_args()
    machine = machine_facts()
    batch = make_batch()
    compiled, compile_s = compiled_step(batch)
    steps = {
        "adapter": adapter_step(build("adapter")),
        "adapter-again": adapter_step(build("adapter")),
        "adapter-no-base-dropout": adapter_step(without_base_dropout(build("adapter"))),
        "adapter-compiled": compiled,
    }
    result = summary(interleaved(steps, [batch] * args.rounds), "adapter")
    result["compile_s"] = compile_s
    machine["load_average_after"] = load_average()
    result["machine"] = machine
    result["setting"] = "adapter r=16, [CLS] pooling, batch 32 x 64 tokens, bf16 autocast, AdamW"
    print_section("adapter training step (ratio to adapter)", result)
    print(f"torch.compile: first call {compile_s:.0f} s")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
