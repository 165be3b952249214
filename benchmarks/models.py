"""Model training-step throughput and peak memory: psn_zoo vs SpikingJelly 2.0.0, side by side in one process.

``sew_resnet18`` and ``spiking_vgg11_bn`` with PSN and with LIF neurons; SpikingJelly's models are built with
its own neurons, given the same weights, and fed the same batch (8 samples, T = 4, 2×64×64 event frames). A
training step is forward, cross-entropy on the time-averaged logits, backward and an SGD update. Peak memory is
the growth of peak resident memory during one step (worker process).

    python -m benchmarks.models
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn

from benchmarks._common import peak_rss_delta, print_table, run_worker, time_pair
from psn_zoo.models import create_model
from psn_zoo.models.convert import to_spikingjelly

BATCH, T, CHANNELS, SIZE, CLASSES = 8, 4, 2, 64, 11
MODELS = ("sew_resnet18", "spiking_vgg11_bn")
NEURONS = ("psn", "lif")


def build_pair(name: str, neuron: str) -> tuple[nn.Module, nn.Module]:
    """Our model and SpikingJelly's (own neurons, 2 input channels), with identical weights."""
    from spikingjelly.activation_based import functional, layer, surrogate
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based.model import sew_resnet, spiking_vgg

    torch.manual_seed(0)
    ours = create_model(name, neuron=neuron, T=T, num_classes=CLASSES, in_channels=CHANNELS)
    sj_neuron = {"spiking_neuron": sjn.PSN, "T": T} if neuron == "psn" else {"spiking_neuron": sjn.LIFNode}
    if name == "sew_resnet18":
        theirs = sew_resnet.sew_resnet18(
            num_classes=CLASSES, cnf="ADD", surrogate_function=surrogate.ATan(), **sj_neuron
        )
        theirs.conv1 = layer.Conv2d(CHANNELS, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        theirs = spiking_vgg.spiking_vgg11_bn(num_classes=CLASSES, surrogate_function=surrogate.ATan(), **sj_neuron)
        theirs.features[0] = layer.Conv2d(CHANNELS, 64, kernel_size=3, padding=1)
    functional.set_step_mode(theirs, "m")
    theirs.load_state_dict(to_spikingjelly(ours.state_dict(), ours))
    return ours, theirs


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, ours: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if ours:
            logits = model(x)
        else:
            from spikingjelly.activation_based import functional

            logits = model(x.transpose(0, 1)).mean(0)  # SJ takes time-first input
            functional.reset_net(model)
        loss_fn(logits, y).backward()
        optimizer.step()

    return step


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = (torch.rand(BATCH, T, CHANNELS, SIZE, SIZE) < 0.2).float() * torch.randint(
        1, 4, (BATCH, T, CHANNELS, SIZE, SIZE)
    )
    return x, torch.randint(0, CLASSES, (BATCH,))


def measure_memory(cases: list[dict]) -> list[dict]:
    results = []
    x, y = _data()
    for case in cases:
        ours, theirs = build_pair(case["model"], case["neuron"])
        row = dict(case)
        for label, model, is_ours in (("ours", ours, True), ("sj", theirs, False)):
            step = train_step(model, x, y, ours=is_ours)
            step()
            step()  # optimizer state exists from here on
            row[label] = peak_rss_delta(step)
        results.append(row)
    return results


def run() -> dict:
    cases = [{"model": m, "neuron": n} for m in MODELS for n in NEURONS]
    memory = {(r["model"], r["neuron"]): r for r in run_worker("benchmarks.models", cases)}
    x, y = _data()
    rows, records = [], []
    for case in cases:
        ours, theirs = build_pair(case["model"], case["neuron"])
        t_ours, t_sj, ratio = time_pair(
            train_step(ours, x, y, ours=True), train_step(theirs, x, y, ours=False), rounds=3, budget_s=3.0
        )
        mem = memory[(case["model"], case["neuron"])]
        record = {
            **case,
            "samples_per_s": {"ours": BATCH / t_ours, "sj": BATCH / t_sj},
            "speedup": vars(ratio),
            "peak_mb": {"ours": mem["ours"] / 2**20, "sj": mem["sj"] / 2**20},
        }
        records.append(record)
        rows.append([
            case["model"], case["neuron"], f"{BATCH / t_ours:.1f}", f"{BATCH / t_sj:.1f}", str(ratio),
            f"{mem['ours'] / 2**20:.0f}", f"{mem['sj'] / 2**20:.0f}", f"{mem['ours'] / max(mem['sj'], 1):.2f}",
        ])  # fmt: skip
        print(f"  measured {case['model']} {case['neuron']}", file=sys.stderr, flush=True)
    headers = ["model", "neuron", "ours samples/s", "SJ samples/s", "throughput ratio (min-max)",
               "peak MB ours", "peak MB SJ", "mem ours/SJ"]  # fmt: skip
    table = print_table(headers, rows)
    return {"records": records, "table": table, "batch": BATCH, "T": T, "input": [CHANNELS, SIZE, SIZE],
            "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_memory(json.loads(sys.stdin.read()))))
        return 0
    result = run()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
