"""Training memory of each method on the packaged BERT: what it is made of, and the measured peak.

For every method a fresh process loads the model, builds AdamW over the trainable parameters and
runs three training steps at batch 32 x 64 tokens on the CPU. Two views of its memory:

* accounted, from the tensors themselves: weights, gradients (trainable parameters only),
  optimizer state (AdamW keeps two fp32 moments per trainable parameter) and the activations
  autograd saves for the backward pass (counted with ``saved_tensors_hooks``, each storage once,
  parameters excluded);
* measured: the rise of the process's peak resident memory over the loaded model during the
  steps (Linux: the peak is reset through ``/proc/self/clear_refs`` after loading and one
  warm-up forward pass). It adds what the accounting leaves out: transient buffers of the
  forward and backward passes and the allocator's own overhead.

It also writes each method's checkpoint and reports its size on disk.

    python benchmarks/memory.py
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from speed import build, make_batch

from adapterlib import PeftModel, method_names, save_adapter

METHODS = ("full", *method_names(), "head")
MIB = 2**20
STEPS = 3


def resident_kib(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def reset_peak() -> bool:
    """Return freed heap to the system and restart the peak at the current size (Linux only)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def saved_activation_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward pass."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    loss.backward()
    return sum(storages.values())


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """Size on disk of what the method must store: the adapter checkpoint, or the trained tensors."""
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, PeftModel):
            save_adapter(model, folder)
        else:
            trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(trained, Path(folder) / "model.safetensors")
        return sum(f.stat().st_size for f in Path(folder).iterdir())


def measure(method: str) -> dict[str, float]:
    """All memory figures of one method, in MiB (run in its own process)."""
    torch.manual_seed(0)
    model = build(method).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch = make_batch()
    with torch.no_grad():
        model(**batch)  # one-off allocations of the first forward pass are not the method's
    peak_available = reset_peak()
    loaded = resident_kib("VmRSS")
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=False)
        model(**batch).loss.backward()
        optimizer.step()
    peak_rise = (resident_kib("VmHWM") - loaded) / 1024 if peak_available else float("nan")
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return {
        "trainable_parameters": sum(p.numel() for p in trainable),
        "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB,
        "gradients_mib": sum(p.numel() * p.element_size() for p in trainable) / MIB,
        "optimizer_state_mib": sum(t.numel() * t.element_size() for t in state) / MIB,
        "saved_activations_mib": saved_activation_bytes(model, batch) / MIB,
        "peak_rise_mib": peak_rise,
        "checkpoint_mib": checkpoint_bytes(model) / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/memory.json")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    results = {}
    for method in METHODS:
        output = subprocess.run(
            [sys.executable, __file__, "--one", method], check=True, capture_output=True, text=True
        ).stdout
        results[method] = json.loads(output.strip().splitlines()[-1])
    columns = (
        "weights_mib",
        "gradients_mib",
        "optimizer_state_mib",
        "saved_activations_mib",
        "peak_rise_mib",
        "checkpoint_mib",
    )
    print(f"batch 32 x 64 tokens, {STEPS} AdamW steps, MiB")
    print(f"{'method':8s} {'trainable':>10s} " + " ".join(f"{c.removesuffix('_mib'):>17s}" for c in columns))
    for method, row in results.items():
        print(
            f"{method:8s} {row['trainable_parameters']:>10,d} " + " ".join(f"{row[c]:17.2f}" for c in columns)
        )
    Path(args.out).write_text(
        json.dumps(
            {"shape": "batch 32 x 64 tokens", "steps": STEPS, "torch": torch.__version__, "methods": results},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
