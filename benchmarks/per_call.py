"""Where one forward + backward of a PSN-family neuron spends its time at small T (CPU), against SpikingJelly.

At small T a ``[T, 2^16]`` call moves little data, so fixed per-call costs weigh: the fused C kernel itself,
PyTorch's autograd (the graph node, three leaf gradients) and our Python (checks, dispatch, the buffer pool). Per
neuron and T this times, in alternating blocks (median of each; the machine's drifts hit every column):

- *kernel*: the fused kernel's forward and backward into preallocated tensors (no autograd, data hot in cache);
- *bare*: one ``torch.autograd.Function`` around the same two kernel calls, outputs from ``torch.empty_like``:
  the least a PyTorch custom op with this kernel costs;
- *ours*: the neuron module's forward + backward, as users run it; *SJ*: SpikingJelly 2.0.0's.

*ours − bare* is what our Python adds per call; *SJ/bare* is the speed-up with none of it (the ceiling of
*SJ/ours*). ::

    python -m benchmarks.per_call                      # T = 2, 3, 4 at N = 2^16 (about a minute)
    python -m benchmarks.per_call --out docs/benchmarks/<cpu>   # also per_call.md/.json
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._common import _block, emit, environment, markdown_table, pow2
from benchmarks.neurons import PSN_FAMILY, _forward_backward, _pair
from psn_zoo.neurons import _native

HEADERS = ["neuron", "T", "N", "kernel ms", "bare ms", "ours ms", "SJ ms", "ours − bare ms", "SJ/ours", "SJ/bare"]
DESCRIPTION = __doc__.split("::")[0].strip()


def kernel_calls(
    kernels: _native.NativeKernels, neuron: torch.nn.Module
) -> tuple[Callable[..., None], Callable[..., None], list[torch.Tensor]]:
    """``(forward(x, out), backward(x, grad, grad_x, grad_params), params)``: the kernel calls the neuron's own
    path makes (dense, banded of order k, or the sliding taps), with its parameters detached."""
    alpha = neuron.surrogate.alpha
    if neuron.name == "sliding_psn":
        taps, bias = neuron.weight.detach(), neuron.bias.detach()
        return (
            lambda x, out: kernels.forward_sliding(x, taps, bias, out),
            lambda x, g, gx, gp: kernels.backward_sliding(x, taps, bias, g, alpha, gx, *gp),
            [taps, bias],
        )
    band = neuron.k if neuron.name == "masked_psn" else None
    w, b = neuron.weight.detach(), neuron.bias.detach()
    return (
        lambda x, out: kernels.forward(x, w, b, out, band=band),
        lambda x, g, gx, gp: kernels.backward(x, w, b, g, alpha, gx, *gp, band),
        [w, b],
    )


def bare_function(forward: Callable[..., None], backward: Callable[..., None]) -> type[torch.autograd.Function]:
    """An autograd Function of ``(x, *params)`` that only allocates and calls the kernel: no checks, no pool."""

    class Bare(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(x)
            forward(x, out)
            ctx.save_for_backward(x, *params)
            return out

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x, *params = ctx.saved_tensors
            gx, gp = torch.empty_like(x), [torch.empty_like(p) for p in params]
            backward(x, grad.contiguous(), gx, gp)
            return (gx, *gp)

    return Bare


def measure(name: str, T: int, N: int, rounds: int = 5, budget_s: float = 0.2) -> dict[str, Any]:
    """One (neuron, T) row: median seconds of each implementation, each timed in ``rounds`` alternating blocks."""
    kernels = _native.load() if _native.enabled() else None
    if kernels is None:
        raise SystemExit("the fused C kernel is not available here (PSN_ZOO_NATIVE=0 or no compiler): nothing to split")
    torch.manual_seed(0)
    ours, theirs = _pair(name, T)
    x, grad = torch.randn(T, N), torch.randn(T, N)
    forward, backward, params = kernel_calls(kernels, ours)
    out, gx, gp = torch.empty_like(x), torch.empty_like(x), [torch.empty_like(p) for p in params]
    bare = bare_function(forward, backward)
    leaves = [p.clone().requires_grad_() for p in params]
    xg = x.clone().requires_grad_()

    def bare_call() -> None:
        xg.grad = None
        for leaf in leaves:
            leaf.grad = None
        bare.apply(xg, *leaves).backward(grad)

    calls = {
        "kernel": lambda: (forward(x, out), backward(x, grad, gx, gp)),
        "bare": bare_call,
        "ours": _forward_backward(ours, xg, grad),
        "SJ": _forward_backward(theirs, xg, grad),
    }
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, fn in calls.items():
            samples[label] += _block(fn, min_reps=3, budget_s=budget_s)
    ms = {label: statistics.median(s) * 1e3 for label, s in samples.items()}
    return {"neuron": name, "T": T, "N": N, **{f"{label}_ms": v for label, v in ms.items()}}


def run(Ts: list[int], N: int = 2**16, neurons: tuple[str, ...] = PSN_FAMILY, **timing: Any) -> dict[str, Any]:
    records = [measure(name, T, N, **timing) for name in neurons for T in Ts]
    rows = [
        [r["neuron"], r["T"], pow2(r["N"]), *(f"{r[f'{c}_ms']:.3f}" for c in ("kernel", "bare", "ours", "SJ")),
         f"{r['ours_ms'] - r['bare_ms']:.3f}", f"{r['SJ_ms'] / r['ours_ms']:.2f}", f"{r['SJ_ms'] / r['bare_ms']:.2f}"]
        for r in records
    ]  # fmt: skip
    share = statistics.median((r["ours_ms"] - r["bare_ms"]) / r["ours_ms"] for r in records)
    notes = [
        f"median share of our call spent above the bare Function (our Python per call): {share:.0%}",
        f"lowest SJ/ours {min(r['SJ_ms'] / r['ours_ms'] for r in records):.2f}, lowest SJ/bare "
        f"{min(r['SJ_ms'] / r['bare_ms'] for r in records):.2f} (torch {torch.get_num_threads()} threads)",
    ]
    table = markdown_table(HEADERS, rows, left=(0,))
    return {"description": DESCRIPTION, "environment": environment(), "records": records, "table": table,
            "tables": [(None, table)], "notes": notes}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ts", nargs="+", type=int, default=[2, 3, 4], help="time steps (default 2 3 4)")
    parser.add_argument("--n", type=int, default=2**16, help="neurons per step (default 2^16)")
    parser.add_argument("--out", help="also write per_call.md/.json to this folder")
    args = parser.parse_args(argv)
    if any(T < 2 for T in args.ts):
        parser.error(f"--ts: the fused kernel takes T >= 2; got {args.ts}")
    emit(run(args.ts, args.n), name="per_call", title="Per-call cost at small T (cpu)", out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
