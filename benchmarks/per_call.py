"""Where one forward + backward of a PSN-family neuron spends its time at small T (CPU), against SpikingJelly.

At small T a ``[T, 2^16]`` call moves little data, so fixed per-call costs weigh: the fused C kernel itself,
PyTorch's autograd (the graph node, three leaf gradients) and our Python (checks, dispatch, the buffer pool). Per
neuron and T this times, in alternating blocks (median of each; the machine's drifts hit every column):

- *kernel*: the fused kernel's forward and backward into preallocated tensors (no autograd, data hot in cache);
- *bare*: one ``torch.autograd.Function`` around the same two kernel calls, outputs from ``torch.empty_like``,
  in a module whose forward is only that call: the least a PyTorch module with this kernel costs;
- *ours*: the neuron module's forward + backward, as users run it; *SJ*: SpikingJelly 2.0.0's.

*ours − bare* is what our Python adds per call; *SJ/bare* is the speed-up with none of it (the ceiling of
*SJ/ours*). ::

    python -m benchmarks.per_call                      # T = 2, 3, 4 at N = 2^16 (about a minute)
    python -m benchmarks.per_call --ops --out docs/benchmarks/<cpu>   # also single ops; per_call.md/.json
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._common import _block, emit, environment, markdown_table, pow2
from benchmarks.neurons import PSN_FAMILY, _forward_backward, _pair
from psn_zoo.neurons import _native
from psn_zoo.neurons._memory import fresh_like

HEADERS = ["neuron", "T", "N", "kernel ms", "bare ms", "ours ms", "SJ ms", "ours − bare ms", "SJ/ours", "SJ/bare"]
DESCRIPTION = __doc__.split("::")[0].strip()


def kernel_calls(
    kernels: _native.NativeKernels, neuron: torch.nn.Module
) -> tuple[Callable[..., None], Callable[..., None], list[torch.Tensor]]:
    """``(forward(x, params, out), backward(x, params, grad, grad_x, grad_params), params)``: the kernel calls the
    neuron's own path makes (dense, banded of order k, or the sliding taps), and its parameters, detached."""
    alpha = neuron.surrogate.alpha
    params = [neuron.weight.detach(), neuron.bias.detach()]
    if neuron.name == "sliding_psn":
        return (
            lambda x, p, out: kernels.forward_sliding(x, *p, out),
            lambda x, p, g, gx, gp: kernels.backward_sliding(x, *p, g, alpha, gx, *gp),
            params,
        )
    band = neuron.k if neuron.name == "masked_psn" else None
    return (
        lambda x, p, out: kernels.forward(x, *p, out, band=band),
        lambda x, p, g, gx, gp: kernels.backward(x, *p, g, alpha, gx, *gp, band),
        params,
    )


class BareNeuron(torch.nn.Module):
    """A module whose forward is only ``function.apply(x, *params)``: timed through the same harness as the neurons
    (so the harness's own cost is in both columns and *ours − bare* is our Python alone)."""

    def __init__(self, function: type[torch.autograd.Function], params: list[torch.Tensor]) -> None:
        super().__init__()
        self.function = function
        for i, p in enumerate(params):
            self.register_parameter(f"p{i}", torch.nn.Parameter(p.clone()))
        self.leaves = tuple(self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x, *self.leaves)


def bare_function(
    forward: Callable[..., None], backward: Callable[..., None], op: Callable[[torch.Tensor], object] | None = None,
    repeat: int = 0,
) -> type[torch.autograd.Function]:  # fmt: skip
    """An autograd Function of ``(x, *params)`` that only allocates and calls the kernel: no checks, no pool.
    ``op(x)``, run ``repeat`` times in its forward and in its backward, prices one operation inside a real call."""

    class Bare(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
            for _ in range(repeat):
                op(x)
            out = torch.empty_like(x)
            forward(x, params, out)
            ctx.save_for_backward(x, *params)
            return out

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x, *params = ctx.saved_tensors
            for _ in range(repeat):
                op(x)
            gx, gp = torch.empty_like(x), [torch.empty_like(p) for p in params]
            backward(x, params, grad.contiguous(), gx, gp)
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
    bare = BareNeuron(bare_function(forward, backward), params)
    xg = x.clone().requires_grad_()
    calls = {
        "kernel": lambda: (forward(x, params, out), backward(x, params, grad, gx, gp)),
        "bare": _forward_backward(bare, xg, grad),
        "ours": _forward_backward(ours, xg, grad),
        "SJ": _forward_backward(theirs, xg, grad),
    }
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(rounds):
        for label, fn in calls.items():
            samples[label] += _block(fn, min_reps=3, budget_s=budget_s)
    ms = {label: statistics.median(s) * 1e3 for label, s in samples.items()}
    return {"neuron": name, "T": T, "N": N, **{f"{label}_ms": v for label, v in ms.items()}}


#: Operations our per-call Python is made of, each priced inside a real call by :func:`op_costs`.
OPS: dict[str, Callable[[torch.Tensor], object]] = {
    "nothing (the baseline)": lambda x: None,
    "a Python function call": lambda x: _identity(x),
    "x.reshape(T, -1)": lambda x: x.reshape(x.shape[0], -1),
    "x.view(T, N)": lambda x: x.view(x.shape[0], x.shape[1]),
    "torch.empty_like(x)": torch.empty_like,
    "psn_zoo's pooled fresh_like(x)": fresh_like,
    "x.is_cpu and x.is_contiguous()": lambda x: x.is_cpu and x.is_contiguous(),
    "x.device": lambda x: x.device,
    "os.environ.get(name)": lambda x: os.environ.get("PSN_ZOO_NATIVE"),
}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def op_costs(T: int = 2, N: int = 2**16, repeat: int = 10, rounds: int = 8, budget_s: float = 0.12) -> dict[str, float]:
    """µs each op of :data:`OPS` adds to the bare PSN module's forward + backward (run ``repeat`` times in each):
    what it costs inside a call whose kernel has just swept the caches, not in a hot loop."""
    kernels = _native.load() if _native.enabled() else None
    if kernels is None:
        raise SystemExit("the fused C kernel is not available here (PSN_ZOO_NATIVE=0 or no compiler)")
    ours, _ = _pair("psn", T)
    forward, backward, params = kernel_calls(kernels, ours)
    xg, grad = torch.randn(T, N).requires_grad_(), torch.randn(T, N)
    calls = {
        name: _forward_backward(BareNeuron(bare_function(forward, backward, op, repeat), params), xg, grad)
        for name, op in OPS.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            samples[name] += _block(fn, min_reps=3, budget_s=budget_s)
    base = statistics.median(samples["nothing (the baseline)"])
    return {name: (statistics.median(s) - base) * 1e6 / (2 * repeat) for name, s in samples.items()}


def run(
    Ts: list[int], N: int = 2**16, neurons: tuple[str, ...] = PSN_FAMILY, with_ops: bool = False, **timing: Any
) -> dict[str, Any]:
    """The split for each (neuron, T); ``with_ops``: also :func:`op_costs`."""
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
    tables = [(None, table)]
    ops = op_costs() if with_ops else {}
    if ops:
        op_rows = [[name, f"{us:.2f}"] for name, us in ops.items() if not name.startswith("nothing")]
        tables.append(("One operation inside a real call (psn, T = 2, N = 2^16)", markdown_table(
            ["operation", "µs each (median over rounds, minus the bare call)"], op_rows, left=(0,))))  # fmt: skip
    return {"description": DESCRIPTION, "environment": environment(), "records": records, "ops_us": ops,
            "table": table, "tables": tables, "notes": notes}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ts", nargs="+", type=int, default=[2, 3, 4], help="time steps (default 2 3 4)")
    parser.add_argument("--n", type=int, default=2**16, help="neurons per step (default 2^16)")
    parser.add_argument("--ops", action="store_true", help="also price single operations inside a call")
    parser.add_argument("--out", help="also write per_call.md/.json to this folder")
    args = parser.parse_args(argv)
    if any(T < 2 for T in args.ts):
        parser.error(f"--ts: the fused kernel takes T >= 2; got {args.ts}")
    emit(run(args.ts, args.n, with_ops=args.ops), name="per_call", title="Per-call cost at small T (cpu)", out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
