"""``psn-zoo demo``: the zoo's main job, end to end on the embedded N-Digits data, offline.

1. generate N-Digits (first run only, progress bar) and read it through ``tonic.datasets.NMNIST``;
2. load a published checkpoint (default: the PSN VGG; ``--entry`` any published entry, e.g. a sequential-digits one,
   whose data is embedded) and evaluate it on its test split;
3. fine-tune it for ``epochs`` with Lightning's Trainer, logging to W&B (offline without credentials);
4. evaluate again, save the checkpoint, print where everything is and what to try next.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..datamodules import datamodule_for
from ..hub import get_pretrained_info
from .classifier import SpikingClassifier
from .wandb import ZooWandbLogger

DEFAULT_ENTRY = "paper_cifar10dvs_vgg.ndigits_psn_t4"

#: Data arguments of an entry that describe the machine, not the preprocessing; the demo sets its own.


@dataclass
class DemoResult:
    entry: str
    published_top1: float
    pretrained_top1: float
    finetuned_top1: float
    checkpoint: Path
    wandb_dir: Path | None
    seconds: float
    #: where the data is (None for data that is embedded in psn_zoo, such as the sequential digits)
    data_dir: Path | None
    #: the data arguments the demo changed from the recipe's (``--data.init_args.<name> <value>``)
    data_overrides: tuple[str, ...] = ()


def run_demo(
    entry: str = DEFAULT_ENTRY,
    *,
    data_dir: str | None = None,
    out_dir: str = "runs",
    epochs: int = 1,
    lr: float = 0.01,
    batch_size: int = 32,
    num_workers: int = 0,
    images_per_class: int | None = None,
    limit_train_batches: int | float = 1.0,
    wandb: bool = True,
    progress: bool = True,
    seed: int = 0,
) -> DemoResult:
    """Run the demo; ``images_per_class``/``limit_train_batches`` shrink it (tests)."""
    start = time.perf_counter()
    L.seed_everything(seed, verbose=False)
    info = get_pretrained_info(entry)
    extra: dict[str, Any] = {} if images_per_class is None else {"images_per_class": images_per_class}
    dm = datamodule_for(info, data_dir=data_dir, batch_size=batch_size, num_workers=num_workers, **extra)
    module = SpikingClassifier(
        model=info.architecture,
        neuron=info.neuron["name"],
        neuron_kwargs={k: v for k, v in info.neuron.items() if k != "name"} or None,
        T=info.T,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        model_kwargs=dict(info.model_kwargs),
        loss="tet",
        optimizer="sgd",
        lr=lr,
        weight_decay=5e-4,
        scheduler="cosine",
        pretrained=entry,
    )
    run_dir = Path(out_dir).expanduser() / "demo"
    logger = ZooWandbLogger(save_dir=str(run_dir), name=f"demo-{info.tag}") if wandb else False
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="finetuned-{epoch}", save_last=True)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=[checkpoint],
        default_root_dir=str(run_dir),
        limit_train_batches=limit_train_batches,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        deterministic=True,
    )
    dataset = info.dataset.get("name") or type(dm).__name__
    _say(f"[1/3] evaluating {entry} (published top-1 {100 * info.metrics['top1']:.2f} %) on the {dataset} test split")
    before = trainer.test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    if not len(getattr(dm, "datasets", {}).get("val", ())):  # a shrunken run (images_per_class) may hold out no
        # image: fine-tune unvalidated
        trainer.limit_val_batches = 0
    _say(f"[2/3] fine-tuning for {epochs} epoch(s) with Lightning's Trainer (SGD, lr {lr}, cosine)")
    trainer.fit(module, datamodule=dm)
    _say("[3/3] evaluating the fine-tuned model")
    after = trainer.test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    wandb_dir = None
    if logger:
        logger.experiment.finish()
        wandb_dir = Path(logger.experiment.dir).parent if logger.experiment.dir else None
    result = DemoResult(
        entry=entry,
        published_top1=float(info.metrics["top1"]),
        pretrained_top1=float(before),
        finetuned_top1=float(after),
        checkpoint=Path(checkpoint.last_model_path or checkpoint.best_model_path).resolve(),
        wandb_dir=wandb_dir.resolve() if wandb_dir else None,
        seconds=time.perf_counter() - start,
        data_dir=Path(dm.data_dir).resolve() if getattr(dm, "data_dir", None) is not None else None,
        data_overrides=() if images_per_class is None else ("--data.init_args.images_per_class", str(images_per_class)),
    )
    _say(report(result, info.recipe))
    return result


def report(result: DemoResult, recipe: str) -> str:
    """The summary the demo prints: numbers, paths, next steps."""
    lines = [
        "",
        f"psn-zoo demo finished in {result.seconds:.0f} s",
        f"  pretrained {result.entry}: test top-1 {100 * result.pretrained_top1:.2f} % "
        f"(manifest: {100 * result.published_top1:.2f} %)",
        f"  after fine-tuning:         test top-1 {100 * result.finetuned_top1:.2f} %",
        f"  checkpoint: {result.checkpoint}",
    ]
    if result.wandb_dir is not None:
        lines += [f"  W&B run:    {result.wandb_dir}", f"              upload it with: wandb sync {result.wandb_dir}"]
    name = Path(recipe).stem  # a shipped recipe, by name: the commands work from any directory
    where = ("--data.init_args.data_dir", str(result.data_dir)) if result.data_dir is not None else ()
    data = shlex.join((*where, *result.data_overrides))
    lines += [
        "",
        "next steps:",
        f"  psn-zoo test --config {name} --ckpt_path {shlex.quote(str(result.checkpoint))} {data}".rstrip(),
        "  psn-zoo pretrained                      # every published checkpoint and its numbers",
        "  python -c \"import psn_zoo; m = psn_zoo.load_pretrained('" + result.entry + "')\"",
        "  psn-zoo recipes                         # the training recipes that ship with psn-zoo",
        "  psn-zoo fit --config seqdigits_sliding_psn   # long dependencies: sliding PSN vs LIF",
        f"  psn-zoo fit --config {name} --trainer.devices 2 --trainer.strategy ddp",
    ]
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, flush=True)
