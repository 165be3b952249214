"""The benchmark suite on tiny grids: real measurements, written as Markdown, JSON and PNG.

No timing is asserted (speed targets never live in tests): only that every report is complete, its ratios are
finite and positive, and the efficiency numbers agree with the manifest.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import __main__ as suite_cli  # noqa: E402
from benchmarks import data, efficiency, models, neurons, reproduce, speed  # noqa: E402
from benchmarks._common import Timing  # noqa: E402
from benchmarks.plots import PNG_SIGNATURE  # noqa: E402
from psn_zoo.machine import machine_summary  # noqa: E402

TINY = Timing(rounds=1, min_reps=1, budget_s=0.0, warmup=1)
RATIO = re.compile(r"^(\d+\.\d+) \((\d+\.\d+)-(\d+\.\d+)\)$")
OVERRIDES = {
    "neurons": {"Ts": [2], "Ns": [2**16], "neurons": ["psn"], "timing": TINY},
    "models": {"models": ["sew_resnet18"], "neurons": ["psn"], "batch": 1, "size": 16, "timing": TINY,
               "memory": False},
    "data": {"images_per_class": 5, "recordings": 1, "workers": [0], "repeats": 1, "model": False},
    "speed": {"Ts": [2, 4], "Ns": [2**8], "families": ["psn"], "timing": TINY},
    "efficiency": {},
    "reproduce": {"pattern": "paper_seq_cnn.seqdigits_[ls]*"},  # sliding PSN and its LIF baseline
}  # fmt: skip


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    data_dir = tmp_path_factory.mktemp("data")
    result = suite_cli.run_suite(out, "quick", data_dir=str(data_dir), overrides=OVERRIDES, show_progress=False)
    assert not result["errors"], result["errors"]
    return out, result


def tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``md`` as (headers, rows)."""
    found, block = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            found.append((block[0], block[2:]))
            block = []
    return found


def ratio_cells(headers: list[str], rows: list[list[str]], columns: list[str]) -> list[float]:
    values = []
    for column in columns:
        i = headers.index(column)
        for row in rows:
            m = RATIO.match(row[i])
            assert m, f"{column}: {row[i]!r} is not 'median (min-max)'"
            values += [float(g) for g in m.groups()]
    return values


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_every_report_is_written(suite):
    out, _ = suite
    machine = machine_summary()
    for part in suite_cli.PARTS:
        report = (out / f"{part}.md").read_text()
        assert report.startswith("# "), part
        head = report.split("\n\n", 3)[1]  # the paragraph under the title: CPU, SIMD features, BLAS, paths
        assert [line.strip(" `") for line in head.splitlines()] == machine, part
        payload = json.loads((out / f"{part}.json").read_text())
        assert payload["records"], part
        assert payload["environment"]["spikingjelly"] == "2.0.0"
        assert payload["environment"]["machine"]["cpu"] and "blas" in payload["environment"]["machine"]
    for png in ("neurons_speedup.png", "speed_lif_over_psn.png", "firing_rates.png"):
        assert_png(out / png)
    summary = (out / "summary.md").read_text()
    assert machine[0] in summary.split("\n\n", 2)[1]
    headline = dict((row[0], row) for row in tables(summary)[0][1])
    assert set(headline) == set(suite_cli.PARTS)
    for part in suite_cli.PARTS:
        assert f"[{part}.md]({part}.md)" in summary


def test_neuron_table(suite):
    out, _ = suite
    [(headers, rows)] = tables((out / "neurons.md").read_text())
    assert headers == neurons.HEADERS
    assert [(r[0], r[1], r[2]) for r in rows] == [("psn", "2", "2^16")]
    values = ratio_cells(headers, rows, ["fwd speedup (min-max)", "f+b speedup (min-max)"])
    values += [float(r[headers.index(c)]) for r in rows for c in ("fwd/copy", "mem ours/SJ")]
    assert all(math.isfinite(v) and v > 0 for v in values)
    payload = json.loads((out / "neurons.json").read_text())
    assert all(r["peak_mb"]["ours"] > 0 and r["peak_mb"]["sj"] > 0 for r in payload["records"])
    assert payload["headline"]["psn_family_fwdbwd_speedup"]["cells"] == 1


@pytest.mark.parametrize("native", ["1", "0"])
def test_kernel_column_names_what_ran(native, monkeypatch):
    """The table's 'ours runs' column is read off the autograd node the neuron made, for every dispatch route."""
    from psn_zoo.neurons import make_neuron

    monkeypatch.setenv("PSN_ZOO_NATIVE", native)
    fused = native == "1"
    cases = [
        ({"name": "psn", "T": 4}, 4, "fused C" if fused else "GEMM"),
        ({"name": "psn", "T": 128}, 128, "GEMM"),  # beyond the kernel's T
        ({"name": "masked_psn", "T": 8, "k": 3, "lambda_": 1.0}, 8, "fused C, band 3" if fused else "GEMM"),
        ({"name": "masked_psn", "T": 8, "k": 3, "lambda_": 0.5}, 8, "fused C" if fused else "GEMM"),
        ({"name": "sliding_psn", "k": 2}, 8, "fused C, band 2" if fused else "GEMM"),
        ({"name": "sliding_psn", "k": 2}, 128, "shifted"),
        ({"name": "lif"}, 4, "serial"),
    ]
    for spec, T, expected in cases:
        assert neurons.our_kernel(make_neuron(spec), T, 1024) == expected, (spec, T)


def test_model_table(suite):
    out, _ = suite
    [(headers, rows)] = tables((out / "models.md").read_text())
    assert headers == models.HEADERS
    assert [(r[0], r[1]) for r in rows] == [("sew_resnet18", "psn")]
    columns = ["throughput ratio (min-max)", "ceiling: free neurons (min-max)"]
    assert all(v > 0 and math.isfinite(v) for v in ratio_cells(headers, rows, columns))
    assert float(rows[0][2]) > 0 and float(rows[0][3]) > 0
    assert "ceiling of that ratio (neurons that cost nothing), sew_resnet18 psn" in (out / "summary.md").read_text()


def test_model_ceiling_removes_every_neuron():
    """The ceiling's model keeps its layers and weights and has no neuron left (so it costs nothing)."""
    import torch

    from psn_zoo.models import create_model
    from psn_zoo.neurons import neurons_of

    model = create_model("sew_resnet18", neuron="psn", T=2, num_classes=3, in_channels=2)
    n_neurons, n_params = len(neurons_of(model)), sum(p.numel() for n, p in model.named_parameters())
    stripped = models.without_neurons(model)
    assert n_neurons > 10 and neurons_of(stripped) == []
    neuron_params = n_neurons * (2 * 2 + 2)  # a PSN with T = 2 holds a [2, 2] weight and a [2] bias
    assert sum(p.numel() for p in stripped.parameters()) == n_params - neuron_params
    seen = []
    for module in stripped.modules():
        if isinstance(module, torch.nn.Identity):
            module.register_forward_hook(lambda m, i, out: seen.append(out))
    assert stripped(torch.rand(2, 2, 2, 16, 16)).shape == (2, 3)
    assert len(seen) == n_neurons  # every former neuron ran, and passed real values through instead of spikes
    assert all(not torch.isin(out, torch.tensor([0.0, 1.0])).all() for out in seen)


def test_data_table_compares_with_spikingjelly(suite):
    out, result = suite
    epochs, one_off = tables((out / "data.md").read_text())
    headers, rows = epochs
    assert [r[0] for r in rows] == ["0"]
    columns = ["ours cold / SJ (min-max)", "memory warm/cold (min-max)", "ours warm / SJ (min-max)"]
    assert all(v > 0 and math.isfinite(v) for v in ratio_cells(headers, rows, columns))
    assert float(rows[0][headers.index("SJ frames epoch samples/s")]) > 0
    steps = [r[1] for r in one_off[1] if r[0] == "SpikingJelly"]
    assert len(steps) == 3 and all(float(r[2]) > 0 for r in one_off[1] if r[0] == "SpikingJelly")
    record = result["results"]["data"]
    assert record["spikingjelly_error"] is None
    # SJ read exactly our recordings: its training set is our whole Train folder
    assert record["records"][0]["sj_train_samples"] == record["recordings"]["Train"]


def test_speed_table_and_figure(suite):
    out, _ = suite
    [(headers, rows)] = tables((out / "speed.md").read_text())
    assert headers == speed.HEADERS
    assert [(r[0], r[1], r[2]) for r in rows] == [("psn", "2", "2^8"), ("psn", "4", "2^8")]
    ratio_columns = [h for h in headers if "t_LIF/t_PSN" in h]
    assert len(ratio_columns) == 4  # inference and training, ours and SJ
    assert all(v > 0 and math.isfinite(v) for v in ratio_cells(headers, rows, ratio_columns))
    payload = json.loads((out / "speed.json").read_text())
    assert len(payload["records"]) == 2 * 2 * 2  # cells x modes x libraries


def test_efficiency_lists_every_entry_and_counts_neurons(suite):
    import psn_zoo

    out, _ = suite
    headers, rows = tables((out / "efficiency.md").read_text())[0]
    assert headers == efficiency.HEADERS
    names = psn_zoo.list_pretrained()
    assert sorted(r[0] for r in rows) == sorted(names)
    records = {r["name"]: r for r in json.loads((out / "efficiency.json").read_text())["records"]}
    psn_entries = [n for n in names if records[n]["neuron"]["name"] == "psn"]
    assert psn_entries
    for name in names:
        info = psn_zoo.get_pretrained_info(name)
        rec = records[name]
        assert rec["neuron_macs_match"], name
        assert rec["metrics"]["neuron_macs"] == pytest.approx(info.metrics["neuron_macs"], rel=1e-12)
        assert rec["metrics"]["top1"] == info.metrics["top1"]
        assert rec["energy_check_uj"]["with"] == pytest.approx(info.metrics["energy_uj"], rel=1e-9)
        assert rec["energy_check_uj"]["without"] == pytest.approx(info.metrics["energy_uj_without_neurons"], rel=1e-9)
    for name in psn_entries:
        rec, T = records[name], records[name]["T"]
        assert rec["neurons"] > 0
        assert rec["expected_neuron_macs"] == pytest.approx(T * T * rec["neurons"])
        assert psn_zoo.get_pretrained_info(name).metrics["neuron_macs"] == pytest.approx(T * T * rec["neurons"])
        row = next(r for r in rows if r[0] == name)
        assert float(row[headers.index("neuron MACs / neuron")]) == pytest.approx(T * T)


def test_reproduce_validates_entries_and_compares_with_lif(suite):
    out, _ = suite
    payload = json.loads((out / "reproduce.json").read_text())
    assert [r["name"] for r in payload["records"]] == [
        "paper_seq_cnn.seqdigits_lif_t28",
        "paper_seq_cnn.seqdigits_sliding_psn_t28",
    ]
    assert all(r["ok"] and "psn-zoo validate --config configs/seqdigits_" in r["command"] for r in payload["records"])
    measured = {r["name"]: r["measured_top1"] for r in payload["records"]}
    [claim] = payload["comparisons"]
    assert claim["entry"].endswith("sliding_psn_t28") and claim["lif_entry"].endswith("lif_t28")
    expected = 100 * (measured[claim["entry"]] - measured[claim["lif_entry"]])
    assert claim["diff_points"] == pytest.approx(expected)
    results, claims = tables((out / "reproduce.md").read_text())
    assert len(results[1]) == 2 and claims[1][0][:2] == [claim["entry"], claim["lif_entry"]]


def test_against_lif_pairs_entries_of_the_same_task():
    records = [
        {"name": "paper_seq_cnn.seqdigits_psn_t28", "measured_top1": 0.90},
        {"name": "paper_cifar10dvs_vgg.ndigits_psn_t4", "measured_top1": 0.99},
        {"name": "paper_seq_cnn.seqdigits_lif_t28", "measured_top1": 0.92},
        {"name": "paper_seq_cnn.seqdigits_permuted_pmsn_t28", "measured_top1": 0.80},
        {"name": "paper_seq_cnn.seqdigits_permuted_channel_sliding_psn_t28", "measured_top1": 0.85},
    ]
    # no LIF N-Digits record here, so the VGG has no pair; the permuted-pixel entries are another task than the LIF's
    # column-reading one, so they have none either
    [claim] = reproduce.against_lif(records)
    assert claim["entry"] == "paper_seq_cnn.seqdigits_psn_t28" and claim["diff_points"] == pytest.approx(-2.0)


def test_against_lif_compares_an_entry_only_with_a_lif_of_the_same_data(monkeypatch):
    """The task includes the data arguments: the pixel order (``permute_pixels``, ``permutation_seed``) and the
    split ``seed``. A LIF trained on the permuted digits with split seed 0 is the baseline of the seed-0 permuted
    entries only; the seed-1 ones have none, and the column-reading entries keep the column-reading LIF."""
    import dataclasses

    real = reproduce.get_pretrained_info
    permuted_seed0 = real("paper_seq_cnn.seqdigits_permuted_channel_sliding_psn_t28")
    permuted_lif = dataclasses.replace(
        real("paper_seq_cnn.seqdigits_lif_t28"), name="paper_seq_cnn.seqdigits_permuted_lif_t28",
        dataset=permuted_seed0.dataset, eval_data=permuted_seed0.eval_data, input=permuted_seed0.input,
    )  # fmt: skip
    monkeypatch.setattr(reproduce, "get_pretrained_info", lambda n: permuted_lif if n == permuted_lif.name else real(n))
    names = ["seqdigits_lif_t28", "seqdigits_permuted_lif_t28", "seqdigits_psn_t28",
             "seqdigits_permuted_channel_sliding_psn_t28", "seqdigits_permuted_fpt_lif_t28",
             "seqdigits_permuted_pmsn_t28", "seqdigits_permuted_paralif_t28"]  # fmt: skip
    records = [{"name": f"paper_seq_cnn.{n}", "measured_top1": 0.5 + i / 100} for i, n in enumerate(names)]
    pairs = {c["entry"].partition(".")[2]: c["lif_entry"].partition(".")[2] for c in reproduce.against_lif(records)}
    assert pairs == {
        "seqdigits_psn_t28": "seqdigits_lif_t28",
        "seqdigits_permuted_channel_sliding_psn_t28": "seqdigits_permuted_lif_t28",  # split seed 0, permuted
        "seqdigits_permuted_fpt_lif_t28": "seqdigits_permuted_lif_t28",
    }  # the permuted PMSN and ParaLIF entries were trained and measured on split seed 1: no LIF of their task


def test_reproduce_reports_earlier_measurements_again(tmp_path):
    """``--reuse``: the comparisons of docs/benchmarks/reproduce.json redone from its own measurements, no runs."""
    earlier = ROOT / "docs" / "benchmarks" / "reproduce.json"
    assert reproduce.main(["--reuse", str(earlier), "--out", str(tmp_path)]) == 0
    again, before = json.loads((tmp_path / "reproduce.json").read_text()), json.loads(earlier.read_text())
    assert again["records"] == before["records"] and again["environment"] == before["environment"]
    assert again["comparisons"] == reproduce.against_lif(before["records"])
    assert not any("permuted" in c["entry"] for c in again["comparisons"])


def test_remeasure_builds_the_manifest_datamodule(tmp_path):
    import psn_zoo

    for name in psn_zoo.list_pretrained():
        info = psn_zoo.get_pretrained_info(name)
        dm = efficiency.build_datamodule(info, str(tmp_path))
        assert type(dm).__name__ == info.dataset["datamodule"]  # a DataModule name (manifest format 2)
        assert dm.hparams.num_workers == 0
        if hasattr(dm, "cache"):  # event DataModules; the sequential digits live in memory
            assert dm.T == info.T and dm.cache == "none" and Path(dm.data_dir) == tmp_path


def test_summary_keeps_the_reports_of_earlier_only_runs(tmp_path):
    first = {"data": OVERRIDES["data"]}
    data_dir = str(tmp_path / "data")
    suite_cli.run_suite(
        tmp_path, "quick", ["efficiency", "data"], data_dir=data_dir, overrides=first, show_progress=False
    )
    suite_cli.run_suite(tmp_path, "full", ["speed"], overrides={"speed": OVERRIDES["speed"]}, show_progress=False)
    summary = (tmp_path / "summary.md").read_text()
    assert "1 part(s)" in summary
    assert "- **efficiency** (quick, an earlier run, " in summary and "- **speed** (full, " in summary
    assert "- **data** (quick, an earlier run, " in summary
    rows = tables(summary)[0][1]
    assert {row[0] for row in rows} == {"efficiency", "data", "speed"}
    assert any(row[0] == "data" and row[1].startswith("memory-cache warm / cold") and "x (" in row[2] for row in rows)


def test_cli_rejects_unknown_parts_and_both_modes(capsys):
    with pytest.raises(SystemExit) as err:
        suite_cli.main(["--only", "neurons,bogus"])
    assert err.value.code == 2 and "bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite_cli.main(["--quick", "--full"])
    for module in (neurons, models, data, speed, efficiency):
        with pytest.raises(SystemExit) as err:
            module.main(["--help"])
        assert err.value.code == 0


def test_parity_ties_counts_only_spikes_inside_the_round_off_bound():
    """benchmarks.parity_ties: every spike SJ's BLAS order flips lies within the rigorous bound it counts."""
    from benchmarks import parity_ties

    for T in (2, 5, 16):
        differ, near, unexplained = parity_ties.count(T, 4096)
        assert unexplained == 0 and 0 <= differ <= near


def test_profile_cell_names_each_librarys_operations():
    """benchmarks.profile_cell lists, per library, the operations a forward + backward spends its time in: our
    fused kernel's autograd node on one side, SpikingJelly's matrix products on the other."""
    from benchmarks.profile_cell import profile
    from psn_zoo.neurons import _native

    tables = profile("psn", 4, 4096, "float32", "cpu", reps=2)
    ours = " ".join(row[0] for row in tables["ours"])
    theirs = " ".join(row[0] for row in tables["SpikingJelly"])
    assert "DenseThreshold" in ours
    if _native.enabled() and _native.load() is not None:  # the fused C kernel makes no matrix product of PyTorch's
        assert "addmm" not in ours
    assert "mm" in theirs and "DenseThreshold" not in theirs
    assert all(float(row[2]) > 0 for rows in tables.values() for row in rows)


def test_per_call_bare_function_runs_the_neurons_own_kernel_calls():
    """benchmarks.per_call splits a call into kernel, bare autograd Function and our Python: its bare Function must
    compute what the neuron computes (same spikes and gradients, bit for bit: the same kernel calls), else
    *ours − bare* would not be our Python's cost. Its report has a row per (neuron, T)."""
    import torch

    from benchmarks import per_call
    from psn_zoo.neurons import _native

    kernels = _native.load() if _native.enabled() else None
    if kernels is None:  # the neurons run the PyTorch path: nothing to split
        pytest.skip("the fused C kernel is off here (PSN_ZOO_NATIVE=0 or no compiler)")
    torch.manual_seed(0)
    for name in neurons.PSN_FAMILY:
        ours, _ = neurons._pair(name, 5)
        x, grad = torch.randn(5, 4096), torch.randn(5, 4096)
        forward, backward, params = per_call.kernel_calls(kernels, ours)
        bare = per_call.BareNeuron(per_call.bare_function(forward, backward), params)
        xb, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        spikes = bare(xb)
        spikes.backward(grad)
        reference = ours(xo)
        reference.backward(grad)
        assert 0 < spikes.sum() < spikes.numel(), name  # both spike values occur: the comparison means something
        assert torch.equal(spikes, reference), name
        assert torch.equal(xb.grad, xo.grad), name
        for leaf, p in zip(bare.parameters(), ours.parameters(), strict=True):
            assert torch.equal(leaf.grad.reshape(p.shape), p.grad), name
    result = per_call.run([2], N=4096, neurons=("psn", "sliding_psn"), rounds=1, budget_s=0.0)
    headers, rows = tables(result["table"])[0]
    assert headers == per_call.HEADERS and [r[:2] for r in rows] == [["psn", "2"], ["sliding_psn", "2"]]
    for r in result["records"]:
        assert all(math.isfinite(r[f"{c}_ms"]) and r[f"{c}_ms"] > 0 for c in ("kernel", "bare", "ours", "SJ"))
    ops = per_call.op_costs(N=4096, repeat=2, rounds=1, budget_s=0.0)  # every op runs inside the bare call
    assert list(ops) == list(per_call.OPS) and ops["nothing (the baseline)"] == 0.0
    assert all(math.isfinite(us) for us in ops.values())


def test_ratio_lies_within_its_range_with_uneven_repeat_counts(monkeypatch):
    """time_pair's ratio and its range come from the same per-round ratios. Made-up blocks with uneven repeat counts:
    round 1 ratio 3, round 2 ratio 2; the ratio of medians pooled over rounds would be 4, outside its own range."""
    from benchmarks import _common

    blocks = iter([[1.0] * 9, [3.0], [2.0], [4.0] * 9])  # ours, theirs of round 1, then of round 2
    monkeypatch.setattr(_common, "_block", lambda fn, **kw: next(blocks))
    _, _, ratio = _common.time_pair(lambda: None, lambda: None, rounds=2)
    assert (ratio.low, ratio.high) == (2.0, 3.0) and ratio.low <= ratio.median <= ratio.high
    assert ratio.median == 2.5


def _holders_clean(fn) -> tuple[int, bool]:
    """How many gradient holders (tensors that require grad, modules) ``fn`` closes over, and whether none of them
    holds a gradient and psn_zoo's buffer pool and this thread's scratch buffers are empty."""
    import torch

    from psn_zoo.neurons import _memory

    leaves = []
    for cell in fn.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, torch.nn.Module):
            leaves += list(value.parameters())
        elif isinstance(value, torch.Tensor) and value.requires_grad:
            leaves.append(value)
    clean = _memory.pooled_bytes() == 0 and _memory.release_scratch() == 0
    return len(leaves), all(leaf.grad is None for leaf in leaves) and clean


@pytest.mark.parametrize("part", ["neurons", "models"])
def test_peak_memory_is_measured_from_no_gradients_and_an_empty_pool(part, monkeypatch):
    """Both scripts measure each side's call from a state where the warm-up's gradients are dropped and our buffer
    pool is empty (else the measured call frees and re-allocates them, and the growth omits them)."""
    from benchmarks import _common

    seen = []
    monkeypatch.setattr(_common, "peak_rss_delta", lambda fn: seen.append(_holders_clean(fn)) or 1)
    if part == "neurons":  # [4, 2^16] float32: 1 MiB, over the pool's smallest buffer
        rows = neurons.measure_memory([{"neuron": "psn", "T": 4, "N": 2**16, "dtype": "float32"}])
    else:  # 64×64 frames: the first layers' outputs are pooled buffers
        rows = models.measure_memory([{"model": "sew_resnet18", "neuron": "psn", "batch": 1, "size": 64}])
    assert [(r["ours"], r["sj"]) for r in rows] == [(1, 1)]
    assert len(seen) == 2 and all(count > 0 and clean for count, clean in seen), seen


MEMORY_PROBE = """
import json, torch
from benchmarks._common import peak_memory_delta
from psn_zoo.neurons import _memory

x, g = torch.randn(4, 2**20, requires_grad=True), torch.randn(4, 2**20)  # 16 MiB each


def gradient():  # as the benchmarks' calls do: drop the last gradient, compute a new one
    x.grad = None
    (x * 2).backward(g)


def pooled():
    _memory.fresh_like(g).fill_(1.0)


gradient(), pooled()  # warm-ups: x.grad is held, a free 16 MiB buffer waits in the pool
print(json.dumps([peak_memory_delta(gradient, "cpu", grads_of=(x,)), peak_memory_delta(pooled, "cpu", grads_of=())]))
"""


def test_peak_memory_counts_the_calls_gradient_and_pooled_output():
    """The shared helper, in a process set up as the memory workers are: a call that allocates a new input gradient
    (after a warm-up that left one) grows by its output and that gradient; one that takes a buffer the warm-up left
    in the pool grows by that buffer."""
    from procs import clean_env, run

    done = run(["-c", MEMORY_PROBE], cwd=ROOT, timeout=300, env=clean_env(MALLOC_MMAP_THRESHOLD_="65536"))
    assert done.returncode == 0, done.stdout[-4000:]
    gradient, pooled = json.loads(done.stdout.strip().splitlines()[-1])
    tensor = 4 * 2**20 * 4
    assert gradient >= 1.8 * tensor, gradient / 2**20  # x * 2 and its gradient, 32 MiB
    assert pooled >= 0.9 * tensor, pooled / 2**20


def test_memory_only_counts_each_calls_gradients(tmp_path, capsys):
    """``--memory-only``: the memory table alone. A dense PSN's forward + backward at T = 4 holds its spikes and
    the input gradient at once, two [T, N] tensors (the table counted one before the gradient was)."""
    out = tmp_path / "mem.json"
    args = ["--memory-only", "--quick", "--ts", "4", "--ns", str(2**16), "--neurons", "psn", "--json", str(out)]
    assert neurons.main(args) == 0
    [(headers, rows)] = tables(capsys.readouterr().out)
    assert headers[-1] == "mem ours/SJ" and [r[:4] for r in rows] == [["psn", "4", "2^16", "float32"]]
    [record] = json.loads(out.read_text())["records"]
    tensor = 4 * 2**16 * 4
    assert record["ours"] >= 1.9 * tensor and record["sj"] > record["ours"], record
    assert record["ours_over_sj"] == pytest.approx(record["ours"] / record["sj"])


def test_parity_ties_reports_and_fails_on_a_difference_outside_the_bound(monkeypatch, capsys):
    """A spike that differs far from the threshold is no tie: benchmarks.parity_ties prints it in its own column
    and exits non-zero."""
    from benchmarks import parity_ties

    real = parity_ties._psn_kernels.DenseThreshold

    class Flipped:  # our kernel with its first spike flipped
        @staticmethod
        def apply(*args):
            spikes = real.apply(*args).clone()
            spikes[0, 0] = 1 - spikes[0, 0]
            return spikes

    monkeypatch.setattr(parity_ties._psn_kernels, "DenseThreshold", Flipped)
    assert parity_ties.count(2, 64)[2] == 1
    assert parity_ties.main(["--columns", "64", "--Ts", "2"]) == 1
    [(headers, rows)] = tables(capsys.readouterr().out)
    assert headers[-1] == "differ outside the bound" and rows[0][-1] == rows[-1][-1] == "1"


@pytest.mark.parametrize("flag", ["--serial-h-in-memory", "--psn-loop"])
def test_an_alternative_run_leaves_the_main_grids_figure_alone(flag, tmp_path, monkeypatch):
    """The GPU suite writes its alternatives into the folder of the main grid: their reports get their own names,
    and ``neurons_speedup.png`` stays the main grid's figure (an alternative run once replaced it with one panel)."""
    from psn_zoo.neurons import _triton_psn, _triton_serial

    monkeypatch.setattr(_triton_serial, "REGISTER_T_MAX", dict(_triton_serial.REGISTER_T_MAX))  # main() edits these
    monkeypatch.setattr(_triton_psn, "DOT_T_PAD", _triton_psn.DOT_T_PAD)
    monkeypatch.setitem(neurons.GRIDS, "quick", {**neurons.GRIDS["quick"], "timing": TINY})
    figure = tmp_path / "neurons_speedup.png"
    figure.write_bytes(b"the main grid's figure")
    args = ["--quick", "--ts", "4", "--ns", str(2**16), "--neurons", "psn", flag, "--out", str(tmp_path)]
    assert neurons.main(args) == 0
    name = "neurons_serial_h_in_memory" if flag == "--serial-h-in-memory" else "neurons_psn_loop"
    assert (tmp_path / f"{name}.md").is_file() and (tmp_path / f"{name}.json").is_file()
    assert figure.read_bytes() == b"the main grid's figure"
    assert "neurons_speedup.png" not in (tmp_path / f"{name}.md").read_text()


def test_the_gpu_suite_archives_its_folder_in_one_file(tmp_path):
    """The device tool returns at most 8 files: ``cuda_suite --archive`` packs the whole output folder (subfolders
    included) into one .tgz, replaced whole after every step."""
    import tarfile

    from benchmarks import cuda_suite

    out = tmp_path / "cuda"
    (out / "bf16").mkdir(parents=True)
    for i in range(12):
        (out / f"step{i}.txt").write_text(f"log {i}")
    (out / "bf16" / "neurons.md").write_text("# bf16")
    target = tmp_path / "OUT" / "cuda.tgz"
    cuda_suite.archive(out, target)
    (out / "step0.txt").write_text("log 0, later")
    cuda_suite.archive(out, target)
    with tarfile.open(target) as tar:
        names = set(tar.getnames())
        assert {f"cuda/step{i}.txt" for i in range(12)} | {"cuda/bf16/neurons.md"} <= names
        assert tar.extractfile("cuda/step0.txt").read() == b"log 0, later"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cuda.tgz"]  # no partial file left beside it
