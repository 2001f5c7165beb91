"""The `xray` command line: one parser that dispatches to serving and to training.

`serve`, `predict` and `explain` come from `service.cli`, `train`, `export`, `evaluate` and
`fit-input-check` from `training.cli`; neither half imports the other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from service import cli as serving
from service.core.config import Settings
from training import cli as training
from xray.contract.errors import StartupError


class _ShowDefaults(argparse.HelpFormatter):
    """Appends each option's default to its help, except where there is none (None: the setting's)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.default is not None and action.default is not argparse.SUPPRESS
        if shown and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose `--help` shows every option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)


def version_text() -> str:
    """The package's version and the versions of the models it would serve (read from the manifest)."""
    from importlib.metadata import PackageNotFoundError, version

    from xray.contract.manifest import load_manifest

    try:
        package = version("xray-triage")
    except PackageNotFoundError:  # run from a source tree without installing
        package = "unknown (not installed)"
    folder = Settings().models_dir
    try:
        manifest = load_manifest(folder)
    except StartupError as exc:
        models = f"none loadable from {folder} ({type(exc).__name__})"
    else:
        models = ", ".join(f"{entry.name} {entry.version}" for entry in manifest.models) + f" (from {folder})"
    return f"xray-triage {package}\nmodels: {models}"


class _VersionAction(argparse.Action):
    """`--version`: computed when asked for, so that `xray --help` reads no manifest."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `xray`."""
    parser = _Parser(
        prog="xray",
        description="Chest X-ray triage: serve, predict, explain, train, export, evaluate.\n"
        "Not for clinical use.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the package and model versions (XRAY_MODELS_DIR) and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # Serving needs none of training's dependencies; the training subcommands import TensorFlow
    # only when they run.
    serving.register(commands)
    training.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `xray` and return its exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
