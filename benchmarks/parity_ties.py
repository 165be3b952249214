"""How often SpikingJelly's PSN spikes differ from ours on this CPU, and how many membranes could (docs/numerics.md).

    python -m benchmarks.parity_ties            # T = 2 … 32, N = 2^18 Gaussian columns

For each T: SpikingJelly's spikes (``addmm`` through the CPU's BLAS, then ``>= 0``) against our kernel's, the
number of membranes whose exact (float64) value lies within the rigorous round-off bound γ_{T+1}·(|W|·|x| + |b|) of
the threshold, the only places where two summation orders may disagree, and the differing spikes outside that bound
(each one a real disagreement, not a tie: the command exits with status 1 if there is any).
"""

from __future__ import annotations

import argparse
import sys

import torch

from psn_zoo.neurons import _psn_kernels, make_surrogate

U32 = torch.finfo(torch.float32).eps / 2


def count(T: int, N: int, seed: int = 0) -> tuple[int, int, int]:
    """(differing spikes, membranes within the bound, differing spikes outside it: 0 where all are ties) for
    ``x ~ N(0, 2²)``, ``W ~ N(0, 1/T)``, ``b ~ N(−1, 0.1²)``."""
    gen = torch.Generator().manual_seed(seed * 1000 + T)
    x = torch.randn(T, N, generator=gen) * 2
    w, b = torch.randn(T, T, generator=gen) / T**0.5, torch.randn(T, generator=gen) * 0.1 - 1
    ours = _psn_kernels.DenseThreshold.apply(x, w, b, make_surrogate("atan"))
    theirs = (torch.addmm(b.unsqueeze(1), w, x) >= 0).float()
    n = T + 1
    gamma = n * U32 / (1 - n * U32)
    w64, b64, x64 = w.double(), b.double().unsqueeze(1), x.double()
    near = (w64 @ x64 + b64).abs() <= gamma * (w64.abs() @ x64.abs() + b64.abs())
    differ = ours != theirs
    return int(differ.sum()), int(near.sum()), int((differ & ~near).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--columns", type=int, default=1 << 18)
    parser.add_argument("--Ts", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8, 10, 11, 16, 32])
    args = parser.parse_args(argv)
    totals = [0, 0, 0, 0]
    print("| T | spikes | differ | membranes within the bound | differ outside the bound |\n|---:|---:|---:|---:|---:|")
    for T in args.Ts:
        cells = (T * args.columns, *count(T, args.columns))
        totals = [a + b for a, b in zip(totals, cells, strict=True)]
        print("| " + " | ".join(map(str, (T, *cells))) + " |")
    print("| " + " | ".join(map(str, ("all", *totals))) + " |")
    if totals[3]:
        print(f"{totals[3]} differing spikes lie outside the round-off bound: not ties", file=sys.stderr)
    return 1 if totals[3] else 0


if __name__ == "__main__":
    raise SystemExit(main())
