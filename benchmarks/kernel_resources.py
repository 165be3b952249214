"""Compile every Triton kernel variant for a GPU target and report its resources, without a GPU.

Triton compiles ahead of time with the ``ptxas`` it ships (no driver is needed), and its ``cuobjdump`` reads the
registers, shared memory and local memory (spills) of each cubin. This checks that the real compiler front end
accepts every variant (the interpreter that runs the kernels on CPUs does not) and that none spills.

    python -m benchmarks.kernel_resources                  # sm_90 (H100/H200), table on stdout
    python -m benchmarks.kernel_resources --json out.json  # also the rows as JSON
    python -m benchmarks.kernel_resources --quick          # fewer T values (the test's set)

Run it without ``TRITON_INTERPRET`` (it refuses otherwise: interpreted kernels cannot be compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _variants(quick: bool) -> list[tuple[str, Any, dict[str, str], dict[str, Any]]]:
    import triton

    from psn_zoo.neurons import _triton_psn as psn
    from psn_zoo.neurons import _triton_serial as serial
    from psn_zoo.neurons._triton_common import column_block

    rows = []
    ts = (1, 3, 4, 16, 32) if quick else (1, 2, 3, 4, 5, 8, 16, 32, 64, psn.MAX_T)
    for dtype, short in DTYPES.items():
        for T in ts:
            t_pad = triton.next_power_of_2(T)
            block, backward_block = column_block(T), psn.backward_block(T)
            io = {"x_ptr": f"*{short}", "w_ptr": "*fp32", "lam_ptr": "*fp32", "b_ptr": "*fp32"}
            ints = {"N": "i32"}
            fwd = {**io, "out_ptr": f"*{short}", **ints, "stride_xt": "i32", "stride_ot": "i32"}
            bwd = {**io, "g_ptr": f"*{short}", "gx_ptr": f"*{short}", "gw_ptr": "*fp32", "gb_ptr": "*fp32",
                   "alpha": "fp32", **ints, "blocks": "i32", "stride_xt": "i32", "stride_gt": "i32",
                   "stride_gxt": "i32", "stride_pw": "i32", "stride_pb": "i32"}  # fmt: skip
            # the dispatched variant, and (full set) the multiply-add loop where tl.dot is dispatched (its
            # alternative); the masked PSN (mask made in the kernel: BAND = k) and the sliding PSN (band built from
            # TAPS = k taps): in the quick set in fp32 only (they add loads, not registers per dtype)
            alternatives = (psn.use_dot(T), False) if psn.use_dot(T) and not quick else (psn.use_dot(T),)
            shapes = ((0, 0), (3, 0), (0, 3)) if T > 3 and (dtype == "float32" or not quick) else ((0, 0),)
            for dot in alternatives:
                for band, taps in shapes:
                    how = ("dot" if dot else "loop") + (f" band={band}" if band else "")
                    how += f" taps={taps}" if taps else ""
                    const = {"T": T, "T_PAD": t_pad, "BLOCK": block, "DOT": dot, "BAND": band, "TAPS": taps}
                    rows.append((f"psn forward T={T} {dtype} {how}", psn._forward_kernel, fwd, const))
                    for kind in (0, 1):
                        const = {"T": T, "T_PAD": t_pad, "BLOCK": backward_block, "KIND": kind, "NEED_X": True,
                                 "NEED_W": True, "NEED_B": True, "DOT": dot, "BAND": band, "TAPS": taps}  # fmt: skip
                        label = f"psn backward T={T} {dtype} surrogate={kind} {how}"
                        rows.append((label, psn._backward_kernel, bwd, const))
        for kind, name in enumerate(("if", "lif", "plif")):
            for reset in (0, 1, 2):
                const = {"T": 8, "BLOCK": column_block(1), "KIND": kind, "DECAY_INPUT": True, "RESET": reset,
                         "HAS_V0": True}  # fmt: skip
                fwd = {"x_ptr": f"*{short}", "v0_ptr": "*fp32", "q_ptr": "*fp32", "out_ptr": f"*{short}",
                       "v_ptr": "*fp32", "N": "i32", "stride_xt": "i32", "stride_ot": "i32", "tau": "fp32",
                       "v_threshold": "fp32", "r": "fp32", "v_init": "fp32"}  # fmt: skip
                rows.append((f"{name} forward reset={reset} {dtype}", serial._forward_kernel, fwd, const))
                bwd = {"x_ptr": f"*{short}", "v0_ptr": "*fp32", "q_ptr": "*fp32", "g_ptr": f"*{short}",
                       "gv_ptr": "*fp32", "gx_ptr": f"*{short}", "h_ptr": "*fp32", "gv0_ptr": "*fp32",
                       "gq_ptr": "*fp32", "N": "i32", "stride_xt": "i32", "stride_gt": "i32", "stride_gxt": "i32",
                       "stride_ht": "i32", "tau": "fp32", "v_threshold": "fp32", "r": "fp32",
                       "alpha": "fp32", "v_init": "fp32"}  # fmt: skip
                for surrogate in (0, 1):
                    const_b = {**const, "DETACH": False, "SURROGATE": surrogate, "HAS_GV": True, "NEED_GV0": True}
                    # H in memory at T = 8; in registers at the longest T it is used for (the most registers),
                    # and (full set) at T = 1 and 8
                    in_registers = (serial.REGISTER_T_MAX[name],) if quick else (1, 8, serial.REGISTER_T_MAX[name])
                    for T, regs in ((8, False), *((T, True) for T in in_registers)):
                        block = serial.backward_block(T, regs)
                        const_t = {**const_b, "T": T, "BLOCK": block, "IN_REGISTERS": regs}
                        where = f"T={T} H in registers" if regs else f"T={T} H in memory"
                        label = f"{name} backward reset={reset} {dtype} surrogate={surrogate} {where}"
                        rows.append((label, serial._backward_kernel, bwd, const_t))
    return rows


def _cuobjdump() -> Path | None:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return path if path.exists() else None


def compile_all(arch: int = 90, quick: bool = False) -> list[dict[str, Any]]:
    """Compile each variant for ``sm_<arch>``; one row per variant with registers, shared memory and spills."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("kernel_resources: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)")
    count = len(_variants(quick))
    workers = max(1, min(os.cpu_count() or 1, 8))
    if workers == 1:
        return _compile_share(arch, quick, 0, 1)
    # compiling is single-threaded (Triton's front end and ptxas): one process per core, each a strided share
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        jobs = [(arch, quick, first, workers) for first in range(workers)]
        shares = list(pool.map(_compile_share, *zip(*jobs, strict=True)))
    rows = [row for share in shares for row in share]
    order = {label: i for i, (label, *_rest) in enumerate(_variants(quick))}
    assert len(rows) == count
    return sorted(rows, key=lambda row: order[row["kernel"]])


def _compile_share(arch: int, quick: bool, first: int, step: int) -> list[dict[str, Any]]:
    """Compile variants ``first, first + step, ...`` of :func:`_variants` (one worker's share)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target, tool, out = GPUTarget("cuda", arch, 32), _cuobjdump(), []
    with tempfile.TemporaryDirectory() as tmp:
        for label, fn, signature, constexprs in _variants(quick)[first::step]:
            source = ASTSource(fn=fn, signature={**signature, **dict.fromkeys(constexprs, "constexpr")},
                               constexprs=constexprs)  # fmt: skip
            options = {"enable_fp_fusion": False} if "psn" not in label else {}
            kernel = triton.compile(source, target=target, options=options)
            row: dict[str, Any] = {"kernel": label, "warps": kernel.metadata.num_warps}
            if tool is not None:
                cubin = Path(tmp) / "k.cubin"
                cubin.write_bytes(kernel.asm["cubin"])
                usage = subprocess.run([tool, "--dump-resource-usage", str(cubin)], capture_output=True, text=True)
                fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage.stdout))
                row |= {key.lower(): int(value) for key, value in fields.items()}
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability ×10 (90: Hopper)")
    parser.add_argument("--quick", action="store_true", help="T in {1, 3, 4, 16, 32}, fewer alternatives (CI's set)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = compile_all(args.arch, args.quick)
    print(f"| kernel (sm_{args.arch}) | warps | registers | shared B | local (spill) B |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kernel']} | {r['warps']} | {r.get('reg', '?')} | {r.get('shared', '?')} | {r.get('local', '?')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
