"""The ``psn-zoo`` command line."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import os
import re
import sys
import textwrap
from collections.abc import Iterator, Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .training.demo import run_demo

    run_demo(
        args.entry, data_dir=args.data_dir, out_dir=args.out, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, num_workers=args.num_workers, images_per_class=args.images_per_class,
        limit_train_batches=int(limit) if (limit := args.limit_train_batches) > 1 else limit, wandb=not args.no_wandb,
    )  # fmt: skip
    return 0


def run_bench(bench_args: Sequence[str]) -> int:
    """``psn-zoo bench ARGS`` = ``python -m benchmarks ARGS`` in the source checkout (every argument, ``--help``
    included, is the benchmarks'); relative ``--out`` / ``--data-dir`` folders are the caller's."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "__main__.py").exists():
        print(
            "psn-zoo bench: the benchmarks ship with the source checkout, not with an installed wheel; clone the "
            "repository, `pip install -e '.[test]'` there and run `psn-zoo bench` (or `python -m benchmarks` in it)",
            file=sys.stderr,
        )
        return 2
    args, i = list(bench_args), 0
    while i < len(args):  # the benchmarks run from the checkout: make the caller's relative folders absolute
        flag, eq, value = args[i].partition("=")
        if flag in ("--out", "--data-dir"):
            if eq:
                args[i] = f"{flag}={Path(value).expanduser().absolute()}"
            elif i + 1 < len(args):
                args[i + 1] = str(Path(args[i + 1]).expanduser().absolute())
        i += 1
    return subprocess.call([sys.executable, "-m", "benchmarks", *args], cwd=root, env=os.environ.copy())


def _cmd_recipes(args: argparse.Namespace) -> int:
    from ._registry import match_names
    from .training.recipes import list_recipes, recipe_path, recipe_summary

    names = match_names(list_recipes(), args.pattern)
    if not names:
        print(f"no recipe matches {args.pattern!r}; `psn-zoo recipes` lists them all")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {recipe_summary(name)}")
    print(f"\nrun one with: psn-zoo fit --config {names[0]}   (files in {recipe_path(names[0]).parent})")
    return 0


def doc_summary(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring as one line (what the listing commands print: a docstring's first
    line may end mid-sentence)."""
    paragraph = inspect.cleandoc(getattr(obj, "__doc__", None) or "").split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _wrapped(text: str, indent: int) -> str:
    """``text`` wrapped to the terminal's width (at most 110 columns), every line indented by ``indent``."""
    import shutil

    width = max(60, min(110, shutil.get_terminal_size((110, 24)).columns))
    pad = " " * indent
    return textwrap.fill(text, width, initial_indent=pad, subsequent_indent=pad, break_on_hyphens=False)


_TREE_LINE = re.compile(r"^(?P<indent>\s*)(?:└─ )?(?P<name>[A-Za-z0-9_]+)")


def filter_tree(tree: str, pattern: str | None) -> str:
    """The lines of ``psn-zoo neurons --tree`` that concern the neurons matching ``pattern``: each match with the
    neurons above it (what generalises it) and below it (what it generalises); empty when nothing matches."""
    from ._registry import match_names

    lines = [line for line in tree.splitlines() if line.strip()]
    parsed = [(len(m["indent"]), m["name"]) if (m := _TREE_LINE.match(line)) else (0, "") for line in lines]
    keep: set[int] = set()
    for i, (depth, name) in enumerate(parsed):
        if not name or not match_names([name], pattern):
            continue
        keep.add(i)
        above = depth
        for j in range(i - 1, -1, -1):  # ancestors: the nearest line above at each smaller depth
            if parsed[j][0] < above:
                keep.add(j)
                above = parsed[j][0]
        for j in range(i + 1, len(parsed)):  # descendants: the deeper lines right below
            if parsed[j][0] <= depth:
                break
            keep.add(j)
    return "\n".join(line for i, line in enumerate(lines) if i in keep)


def _cmd_neurons(args: argparse.Namespace) -> int:
    from .neurons import NEURONS, list_neurons, neuron_info, neuron_tree

    if args.tree:
        tree = neuron_tree() if args.pattern is None else filter_tree(neuron_tree(), args.pattern)
        if not tree:
            print(f"no neuron matches {args.pattern!r}; `psn-zoo neurons --tree` shows the whole tree")
            return 1
        print(tree)
        return 0
    rows = [neuron_info(name) for name in list_neurons(args.pattern)]
    if not rows:
        print(f"no neuron matches {args.pattern!r}")
        return 1
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        flags = ", ".join([
            "causal" if r["causal"] else "parallel-only", *(["needs T"] if r["needs_T"] else []),
            f"reset: {r['reset']}", "streamable" if r["streamable"] else "not streamable",
        ])  # fmt: skip
        aliases = f" (alias: {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']:<{width}}  {r['class']}{aliases} [{flags}]")
        print(f"{'':<{width}}  kwargs: {', '.join(r['kwargs'])}")
        if r["generalises"]:
            print(f"{'':<{width}}  generalises: {', '.join(f'{n} ({c})' for n, c in r['generalises'].items())}")
        print(_wrapped(doc_summary(NEURONS.get(r["name"]).obj) or r["summary"], width + 2))
    return 0


def _neuron_text(spec: dict | None) -> str:
    """A neuron spec in one short word: ``psn``, ``sliding_psn(k=2, exp_init=True)``."""
    if not spec:
        return "none"
    args = ", ".join(f"{k}={format(v, '.4g') if isinstance(v, float) else v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({args})" if args else str(spec["name"])


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_info
    from .models.registry import MODELS

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        info = model_info(name)
        defaults = info["defaults"]
        tag = "paper" if info["paper"] else info["family"]
        summary = doc_summary(MODELS.get(name).obj) or info["summary"]
        print(f"{name:<{width}}  [{tag}] neuron={_neuron_text(info['neuron'])} T={defaults['T']}  {summary}")
    return 0


def _cmd_pretrained(args: argparse.Namespace) -> int:
    from .hub import get_pretrained_info, list_pretrained

    names = list_pretrained(args.pattern)
    if not names:
        print(f"no published checkpoint matches {args.pattern!r}" if args.pattern else "no published checkpoints")
        return 1
    for name in names:
        info = get_pretrained_info(name)
        m = info.metrics
        top1 = f"{100 * m['top1']:.2f} %" if isinstance(m.get("top1"), float) else "n/a"
        energy = f"{m['energy_uj']:.2f} µJ" if isinstance(m.get("energy_uj"), float) else "n/a"
        rate = m.get("mean_firing_rate", float("nan"))
        head = f"{name}  [{info.dataset.get('name')}, T={info.T}, {info.neuron['name']}]"
        print(f"{head} top-1 {top1}, firing {rate:.3f}, energy {energy}, {info.params:,} params")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from .training.publish import publish_checkpoint

    info = publish_checkpoint(
        args.ckpt, args.recipe, args.name, args.out, data_args=args.recipe_args, notes=args.notes,
        overwrite=args.overwrite, license=args.license,
    )  # fmt: skip
    print(
        f"published {info.name}: {info.weights.file} ({info.weights.dtype}), top-1 {100 * info.metrics['top1']:.2f} %"
    )
    return 0


def _cmd_import_paper(args: argparse.Namespace) -> int:
    from .models.convert import import_paper_checkpoint

    try:
        info = import_paper_checkpoint(
            args.file, args.tag, args.out, overwrite=args.overwrite, neuron=args.neuron, lambda_=args.lambda_,
            license=args.license,
        )
    except ValueError as err:
        if "neuron=" not in str(err) and "lambda_=" not in str(err):
            raise
        raise ValueError(f"{err}. On the command line: --neuron <code>, --lambda <value>") from None
    print(f"imported {info.name}: {info.weights.file}; measure it with: psn-zoo validate --config {info.recipe} "
          f"--model.pretrained {info.name}")  # fmt: skip
    return 0


def _cmd_import_sj(args: argparse.Namespace) -> int:
    from .models.convert import import_spikingjelly_state

    info = import_spikingjelly_state(
        args.file, args.arch, args.tag, args.out, neuron=args.neuron, T=args.T, num_classes=args.num_classes,
        in_channels=args.in_channels, model_kwargs=args.model_kwargs, image_size=args.image_size,
        overwrite=args.overwrite, license=args.license,
    )  # fmt: skip
    print(f"imported {info.name}: {info.weights.file}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .hub import bundled_dir
    from .hub.publish import push_to_hub

    out = Path(args.out) if args.out is not None else bundled_dir()
    source = push_to_hub(args.name, args.repo, manifest_dir=out, endpoint=args.endpoint, token=args.token)
    print(f"pushed {args.name} -> {source} (add it to the entry's sources to download from there)")
    return 0


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object like \'{{"cnf": "ADD"}}\', got {text!r}')
    return value


def _license(text: str) -> str:
    """A ``--license`` value, checked before any work (:func:`psn_zoo.hub.metadata.check_license`)."""
    from .hub.metadata import check_license

    try:
        return check_license(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _spec(text: str) -> str | dict:
    return _json_object(text) if text.lstrip().startswith("{") else text


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = ("demo", *LIGHTNING_COMMANDS, "bench", "recipes", "neurons", "models", "pretrained", "publish",
            "import-paper", "import-sj", "push")  # fmt: skip

_OVERWRITE_HELP = "replace an entry of the same name (and delete its weights file); without it, that is an error"
_LICENSE_HELP = (
    "the licence of the weights, a Hugging Face licence identifier (mit, apache-2.0, cc-by-4.0, other, unknown ...); "
    "default: {default}"
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="psn-zoo", description="Parallel Spiking Neuron model zoo")
    parser.add_argument("--version", action="version", version=f"psn-zoo {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{" + ",".join(COMMANDS) + "}",
        help="fit/validate/test/predict run LightningCLI (psn-zoo fit --help); bench runs python -m benchmarks "
        "(psn-zoo bench --help)",
    )
    for name in LIGHTNING_COMMANDS:  # parsed by LightningCLI (main routes them there); listed here for --help
        sub.add_parser(name, help=f"LightningCLI {name}: psn-zoo {name} --config <recipe> [--help]", add_help=False)
    demo = sub.add_parser(
        "demo", help="the main job: evaluate a pretrained PSN on N-Digits, fine-tune it 1 epoch, log to W&B"
    )
    demo.add_argument("--entry", default="paper_cifar10dvs_vgg.ndigits_psn_t4", help="published checkpoint")
    demo.add_argument("--data-dir", default=None,
                      help="dataset folder (default $PSN_ZOO_DATA or ~/.cache/psn_zoo/datasets)")
    demo.add_argument("--out", default="runs", help="runs folder (the demo writes <out>/demo)")
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--lr", type=float, default=0.01)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--num-workers", type=int, default=0)
    demo.add_argument("--images-per-class", type=int, default=None, help="use fewer digits (a quicker run)")
    demo.add_argument("--limit-train-batches", type=float, default=1.0, help="fraction (or count if > 1)")
    demo.add_argument("--no-wandb", action="store_true", help="skip W&B logging")
    demo.set_defaults(func=_cmd_demo)
    sub.add_parser(  # main routes it to python -m benchmarks with every argument (listed here for --help)
        "bench", help="benchmarks against SpikingJelly 2.0.0 (python -m benchmarks; --quick, --full)", add_help=False
    )
    recipes = sub.add_parser("recipes", help="list the shipped training recipes (psn-zoo fit --config <name>)")
    recipes.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. 'ndigits*'")
    recipes.set_defaults(func=_cmd_recipes)
    neurons = sub.add_parser("neurons", help="list the registered neurons and their arguments")
    neurons.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. '*psn*'")
    neurons.add_argument("--tree", action="store_true", help="the family tree: which neuron generalises which")
    neurons.set_defaults(func=_cmd_neurons)
    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. 'sew*'")
    models.set_defaults(func=_cmd_models)

    pretrained = sub.add_parser("pretrained", help="list the published checkpoints and their numbers")
    pretrained.add_argument("pattern", nargs="?", default=None, help="fnmatch filter, e.g. '*ndigits*'")
    pretrained.set_defaults(func=_cmd_pretrained)

    default_out = "checkpoints"
    publish = sub.add_parser("publish", help="evaluate a Lightning .ckpt and publish it as a release entry")
    publish.add_argument("ckpt", help="the Lightning checkpoint (a path or an http(s) URL; read with weights_only)")
    publish.add_argument("--recipe", required=True, help="the config it was trained with (its data is evaluated)")
    publish.add_argument("--name", required=True, help="<architecture>.<tag>")
    publish.add_argument("--out", default=default_out, help="release folder (manifest.json, weights, cards)")
    publish.add_argument("--notes", default="", help="a sentence for the model card")
    publish.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    publish.add_argument("--license", type=_license, default="mit",
                         help=_LICENSE_HELP.format(default="mit, psn_zoo's own"))  # fmt: skip
    publish.add_argument(
        "--recipe-args", nargs=argparse.REMAINDER, default=[], help="last: extra CLI args for the recipe (its data)"
    )
    publish.set_defaults(func=_cmd_publish)

    paper = sub.add_parser("import-paper", help="turn one of the paper's released .pth checkpoints into an entry")
    paper.add_argument("file")
    paper.add_argument("--tag", required=True, help="the entry is <architecture>.<tag>")
    paper.add_argument("--out", default=default_out)
    paper.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    paper.add_argument("--license", type=_license, default="unknown",
                       help=_LICENSE_HELP.format(default="unknown (the paper's release states none)"))  # fmt: skip
    paper.add_argument("--neuron", default=None, help="the script's -neu code (e.g. lif or lifnr, which save the same "
                       "keys) when neither the file's args nor its run folder name say it")  # fmt: skip
    paper.add_argument("--lambda", dest="lambda_", type=float, default=None,
                       help="the masked PSN's λ, when the saved epoch and schedule do not give it")  # fmt: skip
    paper.set_defaults(func=_cmd_import_paper)

    sj = sub.add_parser("import-sj", help="turn a SpikingJelly 2.0.0 state dict into an entry")
    sj.add_argument("file")
    sj.add_argument("--arch", required=True)
    sj.add_argument("--tag", required=True)
    sj.add_argument("--neuron", required=True, type=_spec, help='a name or a JSON spec: \'{"name": "lif", "tau": 2}\'')
    sj.add_argument("--T", type=int, required=True)
    sj.add_argument("--num-classes", type=int, required=True)
    sj.add_argument("--in-channels", type=int, default=3)
    sj.add_argument("--model-kwargs", type=_json_object, default={}, help='builder arguments, e.g. \'{"cnf": "IAND"}\'')
    sj.add_argument("--image-size", type=int, default=224, help="input side length recorded in the metadata")
    sj.add_argument("--out", default=default_out)
    sj.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    sj.add_argument("--license", type=_license, default="unknown",
                    help=_LICENSE_HELP.format(default="unknown (state the one the weights came with)"))  # fmt: skip
    sj.set_defaults(func=_cmd_import_sj)

    push = sub.add_parser("push", help="upload an entry to a Hugging Face Hub repository")
    push.add_argument("name")
    push.add_argument("--repo", required=True, help="org/name")
    push.add_argument("--out", default=None, help="the release folder holding the entry (default: the published "
                      "checkpoints that ship with psn_zoo, wherever it runs from)")  # fmt: skip
    push.add_argument("--endpoint", default=None, help="Hub URL (default: huggingface.co or $HF_ENDPOINT)")
    push.add_argument("--token", default=None)
    push.set_defaults(func=_cmd_push)
    return parser


def _data_errors() -> tuple[type[Exception], ...]:
    """The data and weights-file errors that are not ValueError, LookupError or OSError, once imported (until then
    nothing raised them): ``CorruptSampleError``; ``ChecksumError`` (its ``SizeError``) and ``CacheError``."""
    errors = sys.modules.get("psn_zoo.datamodules.errors")
    sources = sys.modules.get("psn_zoo.hub.sources")
    return (*((errors.CorruptSampleError,) if errors is not None else ()),
            *((sources.ChecksumError, sources.CacheError) if sources is not None else ()))  # fmt: skip


def _without_worker_traceback(message: str) -> str:
    """An error's message without what PyTorch adds when a DataLoader worker raised it ("Caught X in DataLoader
    worker process N", the worker's traceback and the class name)."""
    marker = "Traceback (most recent call last):\n"
    if not message.startswith("Caught ") or marker not in message:
        return message
    lines = message.rsplit(marker, 1)[1].splitlines()
    first = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if first is None:
        return message
    text = "\n".join(lines[first:])
    name, colon, rest = text.partition(": ")
    return rest if colon and all(part.isidentifier() for part in name.split(".")) else text


@contextlib.contextmanager
def _errors_as_one_line(command: str, from_python: bool, *kinds: type[Exception]) -> Iterator[None]:
    """psn_zoo's errors (ValueError, LookupError, OSError and the data errors: they name the problem and the fix)
    and ``kinds`` raised inside print as one line and exit 2 on the command line; from Python, or with
    ``PSN_ZOO_TRACEBACK=1``, they propagate."""
    try:
        yield
    except (ValueError, LookupError, OSError, *_data_errors(), *kinds) as err:
        if from_python or os.environ.get("PSN_ZOO_TRACEBACK") or isinstance(err, BrokenPipeError):
            raise  # a closed stdout (`| head`) is no error of the command: main ends it quietly
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        message = _without_worker_traceback(str(message))
        print(f"psn-zoo {command}: error: {message} (PSN_ZOO_TRACEBACK=1 shows where)", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``psn-zoo`` command. From the command line (``argv=None``) a command's error prints as one line and
    exits 2 (for ``fit``/``validate``/``test``/``predict`` also Lightning's configuration errors and the usage errors
    psn_zoo's LightningCLI raises, such as an unknown ``--config``); called from Python with ``argv``, the exception
    propagates. Output cut short by the reader (``psn-zoo neurons | head``) ends the command quietly, as a pipe
    expects."""
    if argv is not None:
        return _main(list(argv), from_python=True)
    try:
        code = _main(sys.argv[1:], from_python=False)
        sys.stdout.flush()  # a reader that left early is found here, not at interpreter exit
    except BrokenPipeError:
        return _pipe_closed()
    return code


def _pipe_closed() -> int:
    """The reader of stdout has gone (``| head``): no error message, and no second failure when Python flushes
    stdout at exit; the status of a process killed by SIGPIPE, as other command-line tools end."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # SIGPIPE


def _main(args_list: list[str], from_python: bool) -> int:
    if args_list and args_list[0] in (*LIGHTNING_COMMANDS, "demo"):
        from ._environment import check_torchvision

        check_torchvision()  # before Lightning and torchmetrics import it
    if args_list and args_list[0] in LIGHTNING_COMMANDS:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        from .training.cli import run_cli

        with _errors_as_one_line(args_list[0], from_python, MisconfigurationException), _usage_exit(from_python):
            run_cli(list(args_list) if from_python else None)
        return 0
    if args_list and args_list[0] == "bench":
        return run_bench(args_list[1:])
    if args_list and not args_list[0].startswith("-") and args_list[0] not in COMMANDS:
        close = difflib.get_close_matches(args_list[0], COMMANDS, n=1, cutoff=0.5)
        hint = f" Did you mean `psn-zoo {close[0]}`?" if close else ""
        print(f"psn-zoo: error: unknown command {args_list[0]!r}.{hint} The commands are: {', '.join(COMMANDS)} "
              "(psn-zoo --help describes them)", file=sys.stderr)  # fmt: skip
        return 2
    args = build_parser().parse_args(args_list)
    with _errors_as_one_line(args_list[0], from_python), _usage_exit(from_python):
        return int(args.func(args))


@contextlib.contextmanager
def _usage_exit(from_python: bool) -> Iterator[None]:
    """A usage error raised as ``SystemExit("psn-zoo: error: ...")`` (psn_zoo's LightningCLI: an unknown recipe, a
    misspelt DataModule, LightningCLI's optimizer flags) exits 2 on the command line, as argparse's usage errors do
    (``SystemExit`` with a message exits 1). From Python it propagates unchanged."""
    try:
        yield
    except SystemExit as stop:
        if from_python or not isinstance(stop.code, str):
            raise
        print(stop.code, file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    raise SystemExit(main())
