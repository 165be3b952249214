"""Efficiency report of every published checkpoint: accuracy, firing rates, operations and a 45 nm energy estimate.

By default the numbers are the manifest's (``psn_zoo.get_pretrained_info(name).metrics``, measured by ``psn-zoo
publish`` on the entry's full test split). ``--remeasure`` loads each checkpoint (``psn_zoo.load_pretrained``),
builds its DataModule from the manifest (``info.dataset["datamodule"]`` with ``info.dataset["init_args"]``) and
runs :func:`psn_zoo.efficiency.measure_efficiency` again. Either way the neurons of every architecture are counted
by one forward pass of the freshly built network, so the neuron-side cost (the PSN's ``T²`` MACs per neuron, the
LIF's ``T``) is checked against the manifest.

Energy = ``E_AC · SOPs + E_MAC · (synaptic MACs + neuron MACs) + E_AC · neuron ACs`` with E_AC = 0.9 pJ and
E_MAC = 4.6 pJ (32-bit float, 45 nm, Horowitz ISSCC 2014); *without neurons* drops the two neuron terms, which
is the usual SNN accounting and flatters the PSN.

``--update-manifest`` re-measures every entry on its whole split and, where the operation counts changed (a
change to the counter), rewrites them and the energies in ``checkpoints/manifest.json`` and the model cards
(:func:`update_manifest`); top-1, firing rates and weights must come out as the manifest has them.

    python -m benchmarks.efficiency [--remeasure] [--update-manifest] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import emit, environment, markdown_table, median, progress
from psn_zoo import load_pretrained
from psn_zoo.datamodules.pretrained import datamodule_class, datamodule_for
from psn_zoo.efficiency import E_AC_PJ, E_MAC_PJ, measure_efficiency, neuron_macs_per_neuron
from psn_zoo.hub import get_pretrained_info, list_pretrained, resolve_manifest
from psn_zoo.hub.publish import add_entry
from psn_zoo.models import create_model
from psn_zoo.neurons import SpikingNeuron

HEADERS = [
    "entry",
    "neuron",
    "T",
    "top-1 %",
    "mean firing rate",
    "SOPs (M)",
    "synaptic MACs (M)",
    "neurons",
    "neuron MACs (M)",
    "neuron MACs / neuron",
    "energy µJ without neurons",
    "energy µJ with neurons",
    "neuron share of energy",
    "params",
]
METRICS = ("top1", "mean_firing_rate", "synaptic_acs", "synaptic_macs", "neuron_macs", "neuron_acs",
           "energy_uj", "energy_uj_without_neurons", "firing_rate")  # fmt: skip
#: The manifest metrics that are operation counts (and the energy made of them), as ``psn-zoo publish`` stores them.
COUNTS = ("synaptic_acs", "synaptic_macs", "neuron_macs", "neuron_acs", "energy_uj", "energy_uj_without_neurons")


def count_neurons(info) -> dict[str, Any]:
    """Neurons per sample and time step of each spiking layer of ``info``'s network (one forward pass of a
    freshly built model on a zero input), and the neuron-side MACs/ACs they imply."""
    model = create_model(info.architecture, **info.build_kwargs()).eval()
    outputs: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}

    def hook(module, _inputs, output):
        outputs[names[module]] = outputs.get(names[module], 0) + output.numel()

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *info.input.shape))
    finally:
        for h in handles:
            h.remove()
    T = info.T
    per_layer = {name: n / T for name, n in outputs.items()}  # time is merged into the batch inside the model
    macs = acs = 0.0
    for module, name in names.items():
        m, a = neuron_macs_per_neuron(module, T)
        macs += m * per_layer.get(name, 0.0)
        acs += a * per_layer.get(name, 0.0)
    return {"per_layer": per_layer, "neurons": sum(per_layer.values()), "neuron_macs": macs, "neuron_acs": acs}


def energy_uj(m: dict[str, Any], *, neurons: bool) -> float:
    """The 45 nm estimate from the operation counts (µJ per sample)."""
    pj = E_AC_PJ * m["synaptic_acs"] + E_MAC_PJ * m["synaptic_macs"]
    if neurons:
        pj += E_MAC_PJ * m["neuron_macs"] + E_AC_PJ * m.get("neuron_acs", 0.0)
    return pj * 1e-6


def build_datamodule(info, data_dir: str | None = None, batch_size: int = 64):
    """The entry's DataModule (``psn_zoo.datamodules.datamodule_for``), reading without a cache."""
    cls = datamodule_class(info.dataset["datamodule"])
    accepted = inspect.signature(cls.__init__).parameters  # in-memory DataModules take no cache/data_dir
    wanted = {"batch_size": batch_size, "num_workers": 0, "cache": "none", "data_dir": data_dir}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    return datamodule_for(info, **{k: v for k, v in wanted.items() if (takes_any or k in accepted) and v is not None})


def remeasure(
    name: str, data_dir: str | None = None, max_batches: int | None = None, *, manifest: str | Path | None = None
) -> dict[str, Any]:
    """Load ``name`` (of ``manifest``: the bundled release by default), evaluate it on its split and count
    operations; returns metrics like the manifest's."""
    info = get_pretrained_info(name, manifest=manifest)
    model = load_pretrained(name, manifest=manifest)
    dm = build_datamodule(info, data_dir)
    dm.prepare_data()
    split = info.dataset.get("split", "test")
    dm.setup("test" if split == "test" else "fit")
    loader = {"test": dm.test_dataloader, "val": dm.val_dataloader, "train": dm.train_dataloader}[split]()
    predictions: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda _m, _i, out: predictions.append(out.argmax(-1)))

    def batches():
        for x, y in loader:
            labels.append(y)
            yield x, y

    start = time.perf_counter()
    try:
        report = measure_efficiency(model, batches(), max_batches=max_batches)
    finally:
        handle.remove()
    n = report.samples
    correct = sum(int((p == y).sum()) for p, y in zip(predictions, labels, strict=False))
    metrics = report.as_dict()
    metrics["top1"] = correct / n
    metrics["seconds"] = time.perf_counter() - start
    metrics["full_split"] = max_batches is None
    return metrics


def recount(info, measured: dict[str, Any], rel_tol: float = 1e-6) -> dict[str, Any] | None:
    """``info``'s metrics with the operation counts of ``measured`` (a whole-split :func:`remeasure`), or None when
    none changed beyond ``rel_tol``. ``measured`` must be of the entry's weights on its data: the same samples,
    correct predictions and firing rates, else a ValueError says what differs."""
    old = info.metrics
    differs = _differences(old, measured)
    if differs:
        raise ValueError(
            f"{info.name}: re-measured {'; '.join(differs)}: not the weights or data its manifest numbers were "
            "measured on, so its counts are not rewritten"
        )
    if all(math.isclose(measured[k], old[k], rel_tol=rel_tol, abs_tol=1e-9) for k in COUNTS):
        return None
    return {**old, **{k: measured[k] for k in COUNTS}}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a re-measurement has that the manifest's record does not: samples, top-1, firing rates."""
    if not new["full_split"]:
        return [f"{new['samples']} samples only (a part of the split)"]
    n = old.get("samples")
    if new["samples"] != n:
        return [f"{new['samples']} samples, the manifest {n}"]
    out = []
    if round(new["top1"] * n) != round(old["top1"] * n):
        out.append(f"top-1 {100 * new['top1']:.2f} %, the manifest {100 * old['top1']:.2f} %")
    rates, known = new["firing_rate"], old.get("firing_rate", {})
    if set(rates) != set(known) or any(not math.isclose(rates[k], known[k], rel_tol=1e-9) for k in rates):
        out.append("other firing rates than the manifest's")
    return out


def update_manifest(
    names: list[str] | None = None, *, manifest: str | Path | None = None, data_dir: str | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """Re-measure ``names`` (default: every entry of ``manifest``, the bundled release by default) on their whole
    split and rewrite the record and model card of each whose operation counts changed (:func:`recount`), through
    :func:`psn_zoo.hub.publish.add_entry`; weights, top-1 and firing rates stay. Every entry is measured and checked
    before anything is written. Returns ``{name: {metric: (old, new)}}`` of the rewritten entries."""
    folder = resolve_manifest(manifest).parent
    changes: dict[str, dict[str, tuple[float, float]]] = {}
    updated = []
    for name in names or list_pretrained(manifest=manifest):
        info = get_pretrained_info(name, manifest=manifest)
        metrics = recount(info, remeasure(name, data_dir, manifest=manifest))
        if metrics is not None:
            updated.append(dataclasses.replace(info, metrics=metrics))
            changes[name] = {k: (info.metrics[k], metrics[k]) for k in COUNTS}
    for info in updated:
        add_entry(folder, info, overwrite=True)
    return changes


def run(
    names: list[str] | None = None,
    *,
    remeasure_data: bool = False,
    data_dir: str | None = None,
    max_batches: int | None = None,
    show_progress: bool = True,
) -> dict:
    """One record per published entry (manifest numbers, or re-measured ones next to them)."""
    env = environment()
    names = list(names or list_pretrained())
    records = []
    for name in progress(names, "efficiency", disable=not show_progress):
        info = get_pretrained_info(name)
        counted = count_neurons(info)
        manifest = {k: info.metrics.get(k) for k in METRICS}
        record: dict[str, Any] = {
            "name": name,
            "architecture": info.architecture,
            "neuron": dict(info.neuron),
            "T": info.T,
            "dataset": info.dataset.get("name"),
            "split": info.dataset.get("split"),
            "params": info.params,
            "neurons": counted["neurons"],
            "neurons_per_layer": counted["per_layer"],
            "expected_neuron_macs": counted["neuron_macs"],
            "expected_neuron_acs": counted["neuron_acs"],
            "manifest": manifest,
            "source": "manifest",
        }
        metrics = dict(manifest)
        if remeasure_data:
            metrics = remeasure(name, data_dir, max_batches)
            record["remeasured"] = metrics
            record["source"] = "remeasured" + ("" if metrics["full_split"] else f" ({metrics['samples']} samples)")
        record["metrics"] = metrics
        record["energy_check_uj"] = {
            "with": energy_uj(metrics, neurons=True),
            "without": energy_uj(metrics, neurons=False),
        }
        record["neuron_macs_match"] = math.isclose(metrics["neuron_macs"], counted["neuron_macs"], rel_tol=1e-9)
        records.append(record)
    return _report(env, records, remeasure_data)


def _label(record: dict) -> str:
    neuron = record["neuron"]
    extra = ", ".join(f"{k}={v}" for k, v in neuron.items() if k != "name")
    return neuron["name"] + (f" ({extra})" if extra else "")


def _report(env: dict, records: list[dict], remeasured: bool) -> dict:
    rows = []
    for r in records:
        m = r["metrics"]
        with_n, without_n = energy_uj(m, neurons=True), energy_uj(m, neurons=False)
        rows.append([
            r["name"], _label(r), r["T"], f"{100 * m['top1']:.2f}", f"{m['mean_firing_rate']:.4f}",
            f"{m['synaptic_acs'] / 1e6:.2f}", f"{m['synaptic_macs'] / 1e6:.2f}", f"{r['neurons']:,.0f}",
            f"{m['neuron_macs'] / 1e6:.3f}", f"{m['neuron_macs'] / max(r['neurons'], 1):.1f}",
            f"{without_n:.2f}", f"{with_n:.2f}", f"{100 * (with_n - without_n) / with_n:.1f} %", f"{r['params']:,}",
        ])  # fmt: skip
    table = markdown_table(HEADERS, rows, left=(0, 1))
    tables = [("Published checkpoints", table)]
    if remeasured:
        check_rows = []
        for r in records:
            m, p = r["metrics"], r["manifest"]
            check_rows.append([
                r["name"], r["source"], f"{100 * p['top1']:.2f}", f"{100 * m['top1']:.2f}",
                f"{p['mean_firing_rate']:.4f}", f"{m['mean_firing_rate']:.4f}",
                f"{p['energy_uj']:.2f}", f"{m['energy_uj']:.2f}",
            ])  # fmt: skip
        tables.append(
            (
                "Re-measured against the manifest",
                markdown_table(
                    [
                        "entry",
                        "measured on",
                        "top-1 % manifest",
                        "top-1 % now",
                        "firing rate manifest",
                        "firing rate now",
                        "energy µJ manifest",
                        "energy µJ now",
                    ],
                    check_rows,
                    left=(0, 1),
                ),
            )
        )
    notes, headline = [], {}
    pairs = _pairs(records)
    if pairs:
        pair_rows = []
        for psn, lif in pairs:
            mp, ml = psn["metrics"], lif["metrics"]
            e_with = energy_uj(mp, neurons=True) / energy_uj(ml, neurons=True)
            e_without = energy_uj(mp, neurons=False) / energy_uj(ml, neurons=False)
            rate = mp["mean_firing_rate"] / ml["mean_firing_rate"]
            pair_rows.append([
                f"{psn['name']} / {lif['name']}", f"{100 * (mp['top1'] - ml['top1']):+.2f}", f"{rate:.2f}",
                f"{mp['synaptic_acs'] / ml['synaptic_acs']:.2f}", f"{mp['neuron_macs'] / ml['neuron_macs']:.2f}",
                f"{e_without:.2f}", f"{e_with:.2f}",
            ])  # fmt: skip
            headline[f"{psn['name']} / {lif['name']}"] = {
                "top1_delta_pp": 100 * (mp["top1"] - ml["top1"]),
                "energy_ratio_with_neurons": e_with,
                "energy_ratio_without_neurons": e_without,
                "firing_rate_ratio": rate,
            }
            notes.append(
                f"{psn['name']} vs {lif['name']} (same architecture, data and T): top-1 "
                f"{100 * (mp['top1'] - ml['top1']):+.2f} pp, firing rate ×{rate:.2f}, "
                f"energy ×{e_without:.2f} counting synapses only, ×{e_with:.2f} with the neurons' own MACs"
            )
        tables.append(
            (
                "PSN family against LIF (same architecture, dataset and T)",
                markdown_table(
                    [
                        "pair",
                        "top-1 Δ pp",
                        "firing rate ratio",
                        "SOPs ratio",
                        "neuron MACs ratio",
                        "energy ratio without neurons",
                        "energy ratio with neurons",
                    ],
                    pair_rows,
                    left=(0,),
                ),
            )
        )
    shares = [
        1 - energy_uj(r["metrics"], neurons=False) / energy_uj(r["metrics"], neurons=True)
        for r in records
        if r["neuron"]["name"] in ("psn", "masked_psn", "sliding_psn")
    ]
    if shares:
        headline["psn_family_neuron_energy_share"] = {"median": median(shares), "max": max(shares)}
        notes.append(
            f"the PSN family's own neuron MACs are {100 * median(shares):.0f} % (median; max "
            f"{100 * max(shares):.0f} %) of its energy estimate: the SOP-only convention leaves them out"
        )
    mismatched = [r["name"] for r in records if not r["neuron_macs_match"]]
    notes.append(
        "neuron MACs recounted from the built networks (T² per PSN neuron, k·T − k(k−1)/2 per masked/sliding PSN "
        "neuron, T per LIF neuron) "
        + ("match the manifest for every entry" if not mismatched else f"DIFFER from the manifest for {mismatched}")
    )
    source = "re-measured now" if remeasured else "read from `checkpoints/manifest.json`"
    description = (
        f"`python -m benchmarks.efficiency{' --remeasure' if remeasured else ''}`: every entry of "
        f"`psn_zoo.list_pretrained()`, numbers {source} (the manifest's were measured by `psn-zoo publish` on the "
        "entry's full test split). Per sample: *SOPs* are spike-driven synaptic accumulates, *synaptic MACs* those on "
        "real-valued inputs, *neurons* the spiking neurons per time step (counted by running the built network), "
        "*neuron MACs* their own arithmetic (the PSN's T×T weight matrix: T² per neuron; the LIF's leak: T). Energy "
        f"at 45 nm: E_AC = {E_AC_PJ} pJ, E_MAC = {E_MAC_PJ} pJ (Horowitz, ISSCC 2014); *without neurons* is the "
        "usual SNN accounting (synapses only). Compute only: memory traffic is not counted (see Yan et al., "
        "arXiv 2409.08290)."
    )
    return {
        "description": description,
        "environment": env,
        "records": records,
        "table": table,
        "tables": tables,
        "summary": notes,
        "notes": notes,
        "headline": headline,
        "energy_pj": {"E_AC": E_AC_PJ, "E_MAC": E_MAC_PJ},
    }


def _pairs(records: list[dict]) -> list[tuple[dict, dict]]:
    """(PSN-family entry, LIF entry) with the same architecture, model arguments' dataset and T."""
    out = []
    for psn in records:
        if psn["neuron"]["name"] not in ("psn", "masked_psn", "sliding_psn"):
            continue
        for lif in records:
            same = (lif["architecture"], lif["dataset"], lif["T"]) == (psn["architecture"], psn["dataset"], psn["T"])
            if lif["neuron"]["name"] == "lif" and same:
                out.append((psn, lif))
    return out


def plot(result: dict, out: str | Path) -> list[Path]:
    """``<out>/firing_rates.png``: per-layer firing rates, one panel per architecture and dataset, one bar per
    checkpoint (so the PSN and LIF N-Digits VGGs stand side by side)."""
    from benchmarks.plots import grouped_bars

    groups: dict[str, dict[str, dict[str, float]]] = {}
    for r in result["records"]:
        group = f"{r['architecture']} on {r['dataset']} (T={r['T']})"
        label = f"{r['name'].split('.', 1)[-1]}: {_label(r)}, mean {r['metrics']['mean_firing_rate']:.3f}"
        groups.setdefault(group, {})[label] = dict(r["metrics"]["firing_rate"])
    path = grouped_bars(
        groups,
        ylabel="firing rate (spikes / neuron / step)",
        path=Path(out) / "firing_rates.png",
        suptitle="Per-layer firing rates of the published checkpoints",
    )
    return [path]


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remeasure", action="store_true", help="load every checkpoint and measure it again")
    parser.add_argument("--data-dir", help="dataset folder for --remeasure (default: the DataModules' default)")
    parser.add_argument("--max-batches", type=int, help="with --remeasure: only this many test batches of 64")
    parser.add_argument("--out", help="write efficiency.md, efficiency.json and firing_rates.png into this folder")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument(
        "--update-manifest",
        action="store_true",
        help="first re-measure every entry on its whole split and rewrite its changed operation counts in "
        "checkpoints/manifest.json and its card",
    )
    args = parser.parse_args(argv)
    if args.update_manifest:
        if args.max_batches is not None:
            parser.error("--update-manifest measures every entry's whole split: drop --max-batches")
        for name, changes in update_manifest(data_dir=args.data_dir).items():
            print(f"{name}: " + ", ".join(f"{k} {a:.6g} -> {b:.6g}" for k, (a, b) in changes.items()), file=sys.stderr)
    result = run(remeasure_data=args.remeasure, data_dir=args.data_dir, max_batches=args.max_batches)
    emit(result, name="efficiency", title="Efficiency of the published checkpoints", out=args.out,
         json_path=args.json, plot=plot)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
