"""Shared benchmark helpers: repeated timing with medians, peak-RSS measurement, tables, progress and reports."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


#: What every ratio of :func:`time_pair` is, for the reports' headers.
RATIO_MEANING = (
    "the median of the per-round ratios (each round: one block of each side, the ratio of their median times), in "
    "brackets the lowest and highest of the same per-round ratios"
)


@dataclass
class Ratio:
    """A speed ratio over paired repeats: median, min and max."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"

    def times(self) -> str:
        """``1.23x (1.10-1.40)``."""
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"

    @classmethod
    def of(cls, values: Sequence[float]) -> Ratio:
        """Median, min and max of per-round ratios."""
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class Timing:
    """How hard :func:`time_pair` works: rounds of alternating blocks, each of ``warmup`` untimed calls and at
    least ``min_reps`` timed ones (more while the block is under ``budget_s`` seconds)."""

    rounds: int = 3
    min_reps: int = 3
    budget_s: float = 0.6
    warmup: int = 2

    def kwargs(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "min_reps": self.min_reps, "budget_s": self.budget_s, "warmup": self.warmup}


def time_pair(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    *,
    rounds: int = 3,
    min_reps: int = 3,
    budget_s: float = 0.6,
    warmup: int = 2,
    device: str = "cpu",
) -> tuple[float, float, Ratio]:
    """Median seconds of ``ours`` and ``theirs`` over all their timed repeats, and the speed ratio theirs / ours
    (:data:`RATIO_MEANING`; each call synchronised with the GPU when ``device`` is one).

    Each implementation runs in blocks (warm-up, then repeats) so it is timed in its own steady state
    (allocator and cache), and the blocks alternate for ``rounds`` rounds so slow drifts of the machine
    hit both. The ratio and its range come from the same per-round ratios, so the ratio lies within its range.
    """
    samples: dict[str, list[float]] = {"ours": [], "theirs": []}
    round_ratios = []
    ours, theirs = _synced(ours, device), _synced(theirs, device)
    for _ in range(rounds):
        medians = {}
        for label, fn in (("ours", ours), ("theirs", theirs)):
            block = _block(fn, min_reps=min_reps, budget_s=budget_s, warmup=warmup)
            samples[label] += block
            medians[label] = statistics.median(block)
        round_ratios.append(medians["theirs"] / medians["ours"])
    return statistics.median(samples["ours"]), statistics.median(samples["theirs"]), Ratio.of(round_ratios)


def _block(
    fn: Callable[[], object], *, min_reps: int, budget_s: float, max_reps: int = 50, warmup: int = 2
) -> list[float]:
    for _ in range(warmup):
        fn()  # warm-up: lazy init, first-touch page faults, allocator steady state
    gc.collect()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def time_one(
    fn: Callable[[], object], *, min_reps: int = 5, budget_s: float = 0.6, warmup: int = 2, device: str = "cpu"
) -> float:
    """Median seconds of ``fn`` in its steady state (synchronised with the GPU when ``device`` is one)."""
    return statistics.median(_block(_synced(fn, device), min_reps=min_reps, budget_s=budget_s, warmup=warmup))


# ----------------------------------------------------------------------------------- devices
def check_device(name: str) -> str:
    """``cpu`` or ``cuda`` (``cuda:N``), or a :class:`SystemExit` that says what is missing."""
    import torch

    if name == "cpu":
        return name
    if not name.startswith("cuda"):
        raise SystemExit(f"unknown device {name!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    if not torch.cuda.is_available():
        raise SystemExit(f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA GPU: use --device cpu")
    return name


def _synced(fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``fn`` followed by a CUDA synchronisation on a GPU device (so a timer sees the kernels' time)."""
    if not device.startswith("cuda"):
        return fn
    import torch

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


def peak_memory_delta(fn: Callable[[], object], device: str, *, grads_of: Iterable[Any]) -> int:
    """Peak memory growth while ``fn`` runs, from a clean state: the gradients of ``grads_of`` (tensors, and the
    parameters of modules) dropped and psn_zoo's buffer pool and this thread's scratch buffers emptied first, so a
    call after a warm-up counts the gradients, pooled outputs and scratch it needs instead of reusing the warm-up's.
    Resident memory on the CPU (:func:`peak_rss_delta`, in a worker process), the CUDA allocator's peak on a GPU
    (:func:`peak_cuda_delta`)."""
    import torch

    from psn_zoo.neurons import _memory

    for holder in grads_of:
        for leaf in holder.parameters() if isinstance(holder, torch.nn.Module) else (holder,):
            leaf.grad = None
    _memory.release_pool()
    _memory.release_scratch()
    return peak_rss_delta(fn) if device == "cpu" else peak_cuda_delta(fn, device)


def peak_cuda_delta(fn: Callable[[], object], device: str) -> int:
    """Bytes by which the GPU's allocated memory peaks above its level before ``fn`` (caching allocator)."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


# ----------------------------------------------------------------------------------- peak memory
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_delta(fn: Callable[[], object]) -> int:
    """Bytes by which the process's peak resident set grows while ``fn`` runs (Linux).

    Run it in a process started with ``MALLOC_MMAP_THRESHOLD_`` set low (see :func:`run_worker`), so
    every tensor buffer is its own mapping and is returned to the OS when freed.
    """
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def run_worker(module: str, payload: Sequence[dict]) -> list[dict]:
    """Run ``python -m <module> --worker`` with ``payload`` on stdin (JSON) and return its JSON answer."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONUNBUFFERED="1", PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, "-m", module, "--worker"],
        input=json.dumps(list(payload)),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_rows(
    module: str, cases: Sequence[dict], device: str, measure: Callable[[list[dict], str], list[dict]], enabled: bool
) -> list[dict]:
    """Peak memory of every case: ``python -m <module> --worker`` on the CPU (a clean resident set), ``measure``
    in this process on a GPU (the CUDA allocator's statistics); none when not ``enabled``."""
    if not enabled:
        return []
    return run_worker(module, cases) if device == "cpu" else measure(list(cases), device)


def memory_meaning(call: str) -> str:
    """What a report's *peak MB* columns are; ``call`` names the measured call (say, ``one training step``)."""
    return (
        f"*peak MB* is the growth of peak memory during {call}, measured after a warm-up from a clean state: no "
        "gradient held and psn_zoo's buffer pool emptied, so the gradients and pooled outputs the call needs count, "
        "on both sides (resident memory, in a worker process, on the CPU; the CUDA allocator's peak above its level "
        "before the call on a GPU)"
    )


def memory_report(
    module: str, cases: Sequence[dict], keys: Sequence[str], device: str, measure: Callable, call: str
) -> dict[str, Any]:
    """``--memory-only``: the peak memory of every case and nothing else, as a result for :func:`emit`: a row per
    case (``keys``, then ours, SJ and ours / SJ) and, per value of the first key, the ratios' median and range."""
    env = {**environment(), "device": device}
    print("\n".join([*machine_block(env), "", environment_line(env), ""]), flush=True)
    records = memory_rows(module, cases, device, measure, True)
    rows, ratios = [], {}
    for r in records:
        r["ours_over_sj"] = r["ours"] / r["sj"] if r["sj"] > 0 else float("nan")
        if math.isfinite(r["ours_over_sj"]):
            ratios.setdefault(r[keys[0]], []).append(r["ours_over_sj"])
        rows.append([*(pow2(r[k]) if k == "N" else r[k] for k in keys), f"{r['ours'] / 2**20:.1f}",
                     f"{r['sj'] / 2**20:.1f}", f"{r['ours_over_sj']:.2f}"])  # fmt: skip
    left = [i for i, k in enumerate(keys) if records and isinstance(records[0][k], str)]
    table = markdown_table([*keys, "peak MB ours", "peak MB SJ", "mem ours/SJ"], rows, left=left)
    notes = [f"{k}: ours / SJ median {median(v):.2f}, {min(v):.2f}-{max(v):.2f} over {len(v)} cells"
             for k, v in ratios.items()]  # fmt: skip
    return {"description": f"`python -m {module} --memory-only`: {memory_meaning(call)}.", "environment": env,
            "records": records, "tables": [(None, table)], "notes": notes, "device": device}  # fmt: skip


def prefer_sj_triton() -> dict[str, str]:
    """Ask SpikingJelly for its Triton kernels for IF/LIF/PLIF on CUDA (before it is imported); returns the
    settings in force."""
    names = [f"SJ_{n}_CUDA_IMPLEMENTATION" for n in ("IF", "LIF", "PLIF")]
    for name in names:
        os.environ.setdefault(name, "triton")
    return {name: os.environ[name] for name in names}


def sj_state_in_fp32(model: Any) -> Any:
    """SpikingJelly's mixed-precision setting for its IF/LIF/PLIF nodes, in place: half-precision inputs and spikes,
    the membrane state in fp32 (as psn_zoo keeps it), run by its Triton kernels. Without it SJ keeps the state in the
    input's dtype, which its Triton kernels refuse and its torch reference runs."""
    import torch
    from spikingjelly.activation_based.neuron import IFNode, LIFNode, ParametricLIFNode

    for module in model.modules():
        if type(module) in (IFNode, LIFNode, ParametricLIFNode) and module.step_mode == "m":
            module._neuron_precision = (torch.float32, "fp32", "fp32")  # what SJ's precision.convert sets
    return model


# ----------------------------------------------------------------------------------- tables and reports
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: Sequence[int] = ()) -> str:
    """A Markdown table, padded for reading as plain text: numbers right-aligned, the columns in ``left``
    (indices) left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def pad(i: int, text: str) -> str:
        return text.ljust(widths[i]) if i in left else text.rjust(widths[i])

    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join(("-" * (w + 2)) if i in left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|",
    ]
    lines += ["| " + " | ".join(pad(i, c) for i, c in enumerate(row)) + " |" for row in cells]
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Print (and return) a Markdown table."""
    text = markdown_table(headers, rows)
    print(text, flush=True)
    return text


def pow2(n: int) -> str:
    """``2^k`` for a power of two, else the number."""
    k = math.log2(n) if n > 0 else 0.5
    return f"2^{int(k)}" if k == int(k) else str(n)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def progress(iterable: Iterable, desc: str, total: int | None = None, disable: bool | None = None):
    """A tqdm progress bar on stderr (``disable=True`` hides it)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, disable=bool(disable), unit="cell")


def environment() -> dict[str, Any]:
    """Library versions and the machine, stored with every result."""
    import torch

    try:
        from importlib.metadata import version

        sj = version("spikingjelly")
    except Exception:  # pragma: no cover - SpikingJelly is a test dependency
        sj = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from psn_zoo.machine import machine_info, machine_summary

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "machine": machine_info(),
        "machine_summary": machine_summary(),
        "gpu": gpu,
        "torch": torch.__version__,
        "spikingjelly": sj,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def environment_line(env: dict[str, Any]) -> str:
    """The report's environment paragraph (the machine's own lines head the report: :func:`machine_block`)."""
    where = f"{env['cpu']} ({env['cpus']} CPUs, torch {env['threads']} threads)"
    if env.get("device", "cpu") != "cpu":
        where = f"{env.get('gpu')} ({env['device']}; host {where})"
    return (
        f"Measured {env['date']} on {where}, torch "
        f"{env['torch']}, SpikingJelly {env['spikingjelly']}, Python {env['python']}; 1-minute load average at the "
        f"start: {env['load_average_1m']} (anything near or above the CPU count means another job shared the "
        "machine and the absolute times are noisy; the ratios are measured in alternating blocks to resist that)."
    )


def machine_block(env: dict[str, Any]) -> list[str]:
    """The CPU, its SIMD features, the BLAS and the paths taken (:func:`psn_zoo.machine.machine_summary`), one
    Markdown line each: results can depend on all of them (docs/numerics.md)."""
    return [f"`{line}`  " for line in env.get("machine_summary", [])]


def jsonable(obj: Any) -> Any:
    """Dataclasses (Ratio) and tuples made JSON-ready; non-finite floats become None."""
    if isinstance(obj, Ratio):
        return vars(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(out: str | Path, name: str, title: str, result: dict[str, Any]) -> list[Path]:
    """Write ``<out>/<name>.md`` (title, description, environment, tables, notes) and ``<out>/<name>.json``.

    ``result`` holds ``description`` (Markdown), ``tables`` (a list of ``(heading or None, markdown table)``),
    ``notes`` (lines), ``environment`` and anything else (kept in the JSON).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if result.get("environment", {}).get("machine_summary"):
        parts += [*machine_block(result["environment"]), ""]
    if result.get("description"):
        parts += [result["description"].strip(), ""]
    if result.get("environment"):
        parts += [environment_line(result["environment"]), ""]
    for heading, table in result.get("tables", []):
        if heading:
            parts += [f"## {heading}", ""]
        parts += [table, ""]
    for png in result.get("plots", []):
        if (out / Path(png).name).is_file():  # a plot that could not be drawn (no matplotlib) is not linked
            parts += [f"![{Path(png).stem}]({Path(png).name})", ""]
    if result.get("notes"):
        parts += [f"- {line}" for line in result["notes"]] + [""]
    md = out / f"{name}.md"
    md.write_text("\n".join(parts))
    js = out / f"{name}.json"
    js.write_text(json.dumps(jsonable(result), indent=2, allow_nan=False))
    return [md, js]


def emit(
    result: dict[str, Any],
    *,
    name: str,
    title: str,
    out: str | Path | None = None,
    json_path: str | Path | None = None,
    plot: Callable[[dict[str, Any], str | Path], list[Path]] | None = None,
) -> None:
    """The end of every part's command line: print its tables and notes, then write the report files asked for."""
    tables = result.get("tables") or [(None, result["table"])]
    for heading, table in tables:
        print(f"\n{heading}\n\n{table}" if heading else table)
    print()
    for line in result.get("notes") or result.get("summary", []):
        print(f"- {line}")
    if out:
        if plot is not None:
            result["plots"] = [str(p) for p in plot(result, out)]
        write_report(out, name, title, result)
    if json_path:
        Path(json_path).write_text(json.dumps(jsonable(result), indent=2))
