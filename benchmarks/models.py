"""Model training-step throughput and peak memory: psn_zoo vs SpikingJelly 2.0.0, side by side in one process.

``sew_resnet18`` and ``spiking_vgg11_bn`` with PSN and with LIF neurons; SpikingJelly's models are built with
its own neurons, given the same weights, and fed the same batch (8 samples, T = 4, 2×64×64 event frames). A
training step is forward, cross-entropy on the time-averaged logits, backward and an SGD update. Peak memory is
the growth of peak resident memory during one step (worker process), from no gradients and an empty buffer pool.

The *ceiling* column times our model once more with every neuron replaced by an identity (a neuron that costs
nothing) against the same SJ model: no neuron implementation of ours can give more than that ratio, because the
rest of the step (convolutions, batch norm, pooling, optimizer) runs the same kernels in both libraries.

    python -m benchmarks.models            # 2×64×64 frames, 3 rounds
    python -m benchmarks.models --quick    # 2×32×32 frames, 2 short rounds
    python -m benchmarks.models --memory-only   # only the peak memory of a step, no timing
    python -m benchmarks.models --device cuda --batch 32 --size 128   # on a GPU: fp32 and bf16-mixed

``--precisions 32 bf16-mixed`` (the default on a GPU) also times both libraries under ``torch.autocast`` to bf16,
as Lightning's ``bf16-mixed`` runs a step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys

import torch
from torch import nn

from benchmarks._common import (
    RATIO_MEANING,
    Ratio,
    Timing,
    check_device,
    emit,
    environment,
    markdown_table,
    median,
    memory_meaning,
    memory_report,
    memory_rows,
    peak_memory_delta,
    prefer_sj_triton,
    progress,
    sj_state_in_fp32,
    time_pair,
)
from psn_zoo.models import create_model
from psn_zoo.models.convert import to_spikingjelly

BATCH, T, CHANNELS, SIZE, CLASSES = 8, 4, 2, 64, 11
MODELS = ("sew_resnet18", "spiking_vgg11_bn")
NEURONS = ("psn", "lif")
GRIDS = {
    "quick": {"models": list(MODELS), "neurons": list(NEURONS), "batch": BATCH, "size": 32,
              "timing": Timing(rounds=2, min_reps=2, budget_s=0.5, warmup=1)},
    "full": {"models": list(MODELS), "neurons": list(NEURONS), "batch": BATCH, "size": SIZE,
             "timing": Timing(rounds=3, min_reps=3, budget_s=3.0, warmup=2)},
    # one device call on a lent GPU (benchmarks/cuda_suite.py): the batch and frame size, short blocks
    "cuda": {"models": list(MODELS), "neurons": list(NEURONS), "batch": 32, "size": 128,
             "timing": Timing(rounds=3, min_reps=3, budget_s=0.4, warmup=2)},
}  # fmt: skip
PRECISIONS = ("32", "bf16-mixed")
HEADERS = ["model", "neuron", "precision", "ours samples/s", "SJ samples/s", "throughput ratio (min-max)",
           "ceiling: free neurons (min-max)", "peak MB ours", "peak MB SJ", "mem ours/SJ"]  # fmt: skip


def build_pair(name: str, neuron: str, device: str = "cpu", precision: str = "32") -> tuple[nn.Module, nn.Module]:
    """Our model and SpikingJelly's (own neurons, 2 input channels), with identical weights; in mixed precision on
    a GPU, SJ's serial neurons keep their state in fp32 (its own setting), as ours do."""
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
    if precision != "32" and device != "cpu":
        sj_state_in_fp32(theirs)
    return ours.to(device), theirs.to(device)


def without_neurons(model: nn.Module) -> nn.Module:
    """``model`` with every spiking neuron replaced by an identity, in place: the cost of the rest of the step."""
    from psn_zoo.neurons import SpikingNeuron

    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, SpikingNeuron):
                setattr(parent, name, nn.Identity())
    return model


def _label(model: str, neuron: str, precision: str) -> str:
    return f"{model} {neuron}" + ("" if precision == "32" else f" {precision}")


def _autocast(precision: str, device: str):
    if precision == "32":
        return contextlib.nullcontext()
    if precision != "bf16-mixed":
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, ours: bool, precision: str = "32"):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(precision, str(x.device)):
            if ours:
                logits = model(x)
            else:
                from spikingjelly.activation_based import functional

                logits = model(x.transpose(0, 1)).mean(0)  # SJ takes time-first input
                functional.reset_net(model)
            loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()

    return step


def _data(batch: int = BATCH, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    shape = (batch, T, CHANNELS, size, size)
    x = (torch.rand(shape) < 0.2).float() * torch.randint(1, 4, shape)
    return x, torch.randint(0, CLASSES, (batch,))


def measure_memory(cases: list[dict], device: str = "cpu") -> list[dict]:
    """Peak memory growth of one training step, ours and SJ's (:func:`peak_memory_delta`: after two warm-up steps,
    from no gradients and an empty pool)."""
    results = []
    for case in cases:
        x, y = (t.to(device) for t in _data(case.get("batch", BATCH), case.get("size", SIZE)))
        ours, theirs = build_pair(case["model"], case["neuron"], device, case.get("precision", "32"))
        row = dict(case)
        for label, model, is_ours in (("ours", ours, True), ("sj", theirs, False)):
            step = train_step(model, x, y, ours=is_ours, precision=case.get("precision", "32"))
            try:
                step()
                step()  # optimizer state exists from here on
            except Exception:  # the timing of this case reports the error
                row[label] = float("nan")
                continue
            row[label] = peak_memory_delta(step, device, grads_of=(model,))
        results.append(row)
    return results


def _cases(models: list[str] | None, neurons: list[str] | None, batch: int, size: int,
           precisions: list[str] | None) -> list[dict]:  # fmt: skip
    """Every (model, neuron, precision) case, precision outermost; None: every model, neuron, fp32."""
    return [
        {"model": m, "neuron": n, "batch": batch, "size": size, "precision": p}
        for p in precisions or ["32"]
        for m in models or MODELS
        for n in neurons or NEURONS
    ]


def run(
    models: list[str] | None = None,
    neurons: list[str] | None = None,
    batch: int = BATCH,
    size: int = SIZE,
    timing: Timing | None = None,
    *,
    memory: bool = True,
    show_progress: bool = True,
    device: str = "cpu",
    precisions: list[str] | None = None,
) -> dict:
    """One training step of every (model, neuron, precision), ours and SpikingJelly's; throughput ratio ours / SJ."""
    timing = timing or Timing(rounds=3, min_reps=3, budget_s=3.0)
    env = {**environment(), "device": device}
    if device != "cpu":  # SJ's fastest backend for its serial neurons on a GPU
        env["SpikingJelly backends"] = ", ".join(f"{k}={v}" for k, v in prefer_sj_triton().items())
    cases = _cases(models, neurons, batch, size, precisions)
    mem_rows = memory_rows("benchmarks.models", cases, device, measure_memory, memory)
    mem_by_case = {(r["model"], r["neuron"], r["precision"]): r for r in mem_rows}
    x, y = (t.to(device) for t in _data(batch, size))
    rows, records = [], []
    ceilings: dict[tuple[str, str, str], Ratio] = {}
    failed: list[str] = []
    for case in progress(cases, "models", disable=not show_progress):
        p = case["precision"]
        ours, theirs = build_pair(case["model"], case["neuron"], device, p)
        try:
            t_ours, t_sj, ratio = time_pair(
                train_step(ours, x, y, ours=True, precision=p), train_step(theirs, x, y, ours=False, precision=p),
                **timing.kwargs(), device=device,
            )  # fmt: skip
            # against this case's SJ model (its neurons set SJ's time), our model without neurons
            ceiling = ceilings[(case["model"], case["neuron"], p)] = time_pair(
                train_step(without_neurons(copy.deepcopy(ours)), x, y, ours=True, precision=p),
                train_step(theirs, x, y, ours=False, precision=p),
                **timing.kwargs(), device=device,
            )[2]  # fmt: skip
        except Exception as error:  # one failing case keeps the others
            failed.append(f"{_label(case['model'], case['neuron'], p)}: {type(error).__name__}: {str(error)[:300]}")
            rows.append([case["model"], case["neuron"], p, "error", *["-"] * (len(HEADERS) - 4)])
            continue
        key = (case["model"], case["neuron"], p)
        mem = mem_by_case.get(key, {"ours": float("nan"), "sj": float("nan")})
        record = {
            **case,
            "samples_per_s": {"ours": batch / t_ours, "sj": batch / t_sj},
            "speedup": vars(ratio),
            "ceiling": vars(ceiling),
            "peak_mb": {"ours": mem["ours"] / 2**20, "sj": mem["sj"] / 2**20},
        }
        records.append(record)
        mem_ratio = f"{mem['ours'] / mem['sj']:.2f}" if mem["sj"] > 0 else "-"
        if show_progress:  # each row as it is measured: a run stopped early keeps what it measured
            print(f"| {_label(*key)} | {batch / t_ours:.1f} | {batch / t_sj:.1f} | {ratio} | {ceiling} | "
                  f"{mem['ours'] / 2**20:.0f} | {mem['sj'] / 2**20:.0f} |", file=sys.stderr, flush=True)  # fmt: skip
        rows.append([
            case["model"], case["neuron"], p, f"{batch / t_ours:.1f}", f"{batch / t_sj:.1f}", str(ratio), str(ceiling),
            f"{mem['ours'] / 2**20:.0f}", f"{mem['sj'] / 2**20:.0f}", mem_ratio,
        ])  # fmt: skip
    table = markdown_table(HEADERS, rows, left=(0, 1, 2))
    ratios = [r["speedup"]["median"] for r in records] or [float("nan")]
    mem_ratios = [r["peak_mb"]["ours"] / r["peak_mb"]["sj"] for r in records if r["peak_mb"]["sj"] > 1]
    headline = {
        "throughput_ratio": {"median": median(ratios), "min": min(ratios), "max": max(ratios)},
        "ceiling": {_label(*key): c.median for key, c in ceilings.items()},
        "throughput_ratio_by_precision": {
            p: {"median": median(v), "min": min(v)}
            for p in dict.fromkeys(r["precision"] for r in records)
            if (v := [r["speedup"]["median"] for r in records if r["precision"] == p])
        },
    }
    summary = [
        f"training-step throughput ours / SJ: median {median(ratios):.2f}x, min {min(ratios):.2f}x, "
        f"max {max(ratios):.2f}x over {len(ratios)} model/neuron pairs",
        "ceiling (our model with neurons that cost nothing, against SJ): "
        + ", ".join(f"{_label(*key)} {c.median:.2f}x" for key, c in ceilings.items()),
    ]
    if mem_ratios:
        headline["peak_memory_ours_over_sj"] = {"median": median(mem_ratios), "max": max(mem_ratios)}
        summary.append(f"peak memory of a step, ours / SJ: {min(mem_ratios):.2f}-{max(mem_ratios):.2f}")
    summary += [f"failed case: {line}" for line in failed]
    description = (
        "`python -m benchmarks.models`: one training step (forward, cross-entropy on the time-averaged logits, "
        f"backward, SGD with momentum) on a batch of {batch} samples of T = {T} event frames of {CHANNELS}×{size}×"
        f"{size}; SpikingJelly 2.0.0's own models (`sew_resnet`, `spiking_vgg`, multi-step) with its own neurons "
        "and our weights (`psn_zoo.models.convert.to_spikingjelly`), in the same process. *throughput ratio* = our "
        f"samples/s / SJ's ({RATIO_MEANING}); *ceiling* is the same ratio with every neuron of our model replaced "
        f"by an identity, the most any neuron implementation could give; {memory_meaning('one step')}."
    )
    return {"description": description, "environment": env, "records": records, "table": table,
            "tables": [(None, table)], "summary": summary, "notes": summary, "headline": headline,
            "batch": batch, "T": T, "input": [CHANNELS, size, size], "timing": vars(timing),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32×32 frames and two short rounds")
    parser.add_argument("--cuda-grid", action="store_true", help="batch 32 of 128×128 frames, short timing blocks")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--batch", type=int, help=f"samples per step (default {BATCH})")
    parser.add_argument("--size", type=int, help=f"frame height and width (default {SIZE}; 32 with --quick)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS,
                        help="default: 32 on the CPU, 32 and bf16-mixed on a GPU")  # fmt: skip
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak memory of each case, no timing (writes models_memory.md)")  # fmt: skip
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--out", help="also write models.md/.json to this folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_memory(json.loads(sys.stdin.read()))))
        return 0
    device = check_device(args.device)
    grid = dict(GRIDS["quick" if args.quick else "cuda" if args.cuda_grid else "full"])
    grid.update({key: value for key, value in (("batch", args.batch), ("size", args.size)) if value})
    precisions = args.precisions or (["32"] if device == "cpu" else list(PRECISIONS))
    if args.memory_only:
        cases = _cases(grid["models"], grid["neurons"], grid["batch"], grid["size"], precisions)
        result = memory_report("benchmarks.models", cases, ["model", "neuron", "precision", "batch", "size"], device,
                               measure_memory, "one training step")  # fmt: skip
        emit(result, name="models_memory", title=f"Models: peak memory of a training step ({device})", out=args.out,
             json_path=args.json)  # fmt: skip
        return 0
    result = run(**grid, device=device, precisions=precisions)
    emit(result, name="models", title=f"Models: one training step ({device})", out=args.out, json_path=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
