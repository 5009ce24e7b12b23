"""``meta-core train``, ``meta-core eval``, ``meta-core data example``,
``meta-core data wordnet`` and ``meta-core data speech``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meta_core.config import eval_config, load_config
from meta_core.data.wordnet import WORDNET_DIR, summarize, write_wordnet
from meta_core.rl.config import PolicyRunConfig, is_policy_preset

# A subcommand: its parsed arguments in, the exit status out.
Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Arguments the parser accepted that do not go together: reported as argparse reports
    its own (usage, the message, exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    command: Command = args.func
    try:
        return command(args)
    except UsageError as exc:
        parser.error(str(exc))


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, each bound to its function by ``set_defaults(func=...)``."""
    parser = argparse.ArgumentParser(prog="meta-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="meta-train from a preset and write an artifact")
    tr.add_argument(
        "--preset",
        help="preset name (meta_core/presets) or path; with --resume, default: the run's own",
    )
    tr.add_argument("--out", required=True, type=Path, help="run and artifact directory")
    tr.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a preset field (repeatable)",
    )
    tr.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=train_command)
    ev = sub.add_parser("eval", help="evaluate an artifact: report.json, plots, manifest")
    ev.add_argument("artifact", type=Path)
    ev.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override an [eval] field, e.g. tasks=100 or eval.tasks=100",
    )
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--no-plots", action="store_true")
    ev.set_defaults(func=eval_command)
    add_data_commands(sub.add_parser("data", help="datasets to train on without code"))
    return parser


def add_data_commands(data: argparse.ArgumentParser) -> None:
    """``data example``, ``data wordnet`` and ``data speech``."""
    dsub = data.add_subparsers(dest="action", required=True)
    example = dsub.add_parser(
        "example", help="write small image folders, a CSV table and a CSV of sentences, generated"
    )
    example.add_argument("--out", required=True, type=Path)
    example.set_defaults(func=data_example)
    wordnet = dsub.add_parser(
        "wordnet", help="write a labelled text corpus (CSV) from WordNet's database files"
    )
    wordnet.add_argument("--out", required=True, type=Path, help="writes OUT/wordnet.csv")
    wordnet.add_argument(
        "--wordnet-dir",
        type=Path,
        default=WORDNET_DIR,
        help="WordNet's data.* files (default: %(default)s, Debian's wordnet-base)",
    )
    wordnet.set_defaults(func=data_wordnet)
    speech = dsub.add_parser(
        "speech", help="synthesise spoken keywords with espeak-ng: OUT/<word>/*.wav"
    )
    speech.add_argument("--out", required=True, type=Path, help="emptied, then written")
    speech.add_argument("--clips", type=int, default=30, help="clips a word (default 30)")
    speech.add_argument("--words", type=int, default=0, help="only the first N words")
    speech.add_argument("--seed", type=int, default=0)
    speech.set_defaults(func=data_speech)


def train_command(args: argparse.Namespace) -> int:
    """``train``: 0 once the artifact is written, 2 for data it cannot use (one line, no
    traceback), 130 when interrupted."""
    from meta_core.checkpoint import recorded_config
    from meta_core.data.folders import DataError
    from meta_core.train import train

    if args.preset is None and not args.resume:
        raise UsageError("train needs --preset (only --resume reads the run's own config)")
    if args.preset is not None and is_policy_preset(args.preset):
        return train_policy_command(args)
    if args.preset is None:
        cfg = recorded_config(args.out, args.overrides)
    else:
        cfg = load_config(args.preset, args.overrides)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        train(
            cfg,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            leave_group=ranks == 1,
        )
    except KeyboardInterrupt:
        return 130
    except DataError as exc:  # the user's data: one line, no traceback
        print(f"meta-core train: {exc}", file=sys.stderr)
        return 2
    print(f"artifact written to {args.out}")
    if ranks > 1:  # every rank is past the final barrier: end without C++ teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def train_policy_command(args: argparse.Namespace) -> int:
    """``train`` of a policy preset (``kind = "policy"``, :mod:`meta_core.rl`)."""
    from meta_core.rl.config import load_policy_config
    from meta_core.rl.environments import MissingDependency
    from meta_core.rl.train import train_policy

    if args.resume:
        raise UsageError("a policy run does not resume: train it again")
    try:
        train_policy(load_policy_config(args.preset, args.overrides), args.out)
    except KeyboardInterrupt:
        return 130
    except MissingDependency as exc:
        raise UsageError(str(exc)) from None
    print(f"artifact written to {args.out}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    """``eval``: the report written beside the artifact, and a line per method and shot
    count printed."""
    from meta_core.artifact import read_manifest
    from meta_core.evaluate import evaluate_artifact

    manifest, _, _ = read_manifest(args.artifact)
    if isinstance(manifest.training.config, PolicyRunConfig):
        return eval_policy_command(args, manifest.training.config)
    eval_cfg = eval_config(manifest.training.config.eval, args.overrides)
    report = evaluate_artifact(args.artifact, eval_cfg, device=args.device, plots=not args.no_plots)
    for method, by_key in report["results"].items():
        for key, by_step in by_key.items():  # key: shots, or "<ways>-way <shots>-shot"
            label = f"K={key}" if key.isdigit() else key
            cells = ", ".join(f"{s}: {result_cell(v)}" for s, v in by_step.items())
            print(f"{method:>10} {label}: {cells}")
    return 0


def eval_policy_command(args: argparse.Namespace, run: PolicyRunConfig) -> int:
    """``eval`` of a policy meta-model: a line per method, its return after each step."""
    from meta_core.rl.evaluate import evaluate_policy

    eval_cfg = eval_config(run.eval, args.overrides)
    report = evaluate_policy(args.artifact, eval_cfg, plots=not args.no_plots)
    for method, by_step in report["results"].items():
        cells = ", ".join(
            f"{s}: {v['return']:.2f}±{v['return_ci95']:.2f}" for s, v in by_step.items()
        )
        print(f"{method:>10} return after steps {cells}")
    return 0


def result_cell(v: dict[str, Any]) -> str:
    """One step's (or a fitted baseline's "fit") mean loss (and accuracy, for
    classification) with its 95% interval."""
    cell = f"{v['loss']:.3f}±{v['loss_ci95']:.3f}"
    if "accuracy" in v:
        cell += f" acc {100 * v['accuracy']:.2f}±{100 * v['accuracy_ci95']:.2f}%"
    return cell


def data_example(args: argparse.Namespace) -> int:
    """``data example``: the generated image folders, table and sentences."""
    from meta_core.data.example import write_example

    images, table, sentences = write_example(args.out)
    print(f"image folders: {images}\ntable: {table}\nsentences: {sentences}")
    return 0


def data_wordnet(args: argparse.Namespace) -> int:
    """``data wordnet``: the corpus written and summarized, or 2 for a folder without
    WordNet (one line, no traceback)."""
    from meta_core.data.folders import DataError

    try:
        path = write_wordnet(args.out, args.wordnet_dir)
    except DataError as exc:
        print(f"meta-core data wordnet: {exc}", file=sys.stderr)
        return 2
    print(f"corpus: {path}\n{summarize(path).line()}")
    return 0


def data_speech(args: argparse.Namespace) -> int:
    """``data speech``: the keyword dataset synthesised and summarized, or 2 without
    espeak-ng (one line, no traceback)."""
    from meta_core.data.folders import DataError
    from meta_core.data.spoken import write_speech

    try:
        summary = write_speech(args.out, clips=args.clips, words=args.words or None, seed=args.seed)
    except DataError as exc:
        print(f"meta-core data speech: {exc}", file=sys.stderr)
        return 2
    print(
        f"keywords: {args.out}\n{summary.words} words, {summary.clips_per_word} clips each "
        f"({summary.held_out_per_word} by the held-out voice variants "
        f"{', '.join(summary.held_out_variants)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
