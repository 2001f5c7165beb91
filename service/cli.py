"""The `xray` command line.

`serve` and `predict` need only the service's dependencies; the training subcommands import
TensorFlow lazily, so a serving install never loads it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.config import Settings
from service.core.logging import configure_logging
from service.errors import RequestError, StartupError
from service.inference.preprocessing import SUFFIXES

if TYPE_CHECKING:
    from service.inference.predictor import Predictor
    from service.inference.preprocessing import DecodedImage

logger = logging.getLogger("service.cli")

EXIT_STARTUP = 2
EXIT_SOME_FAILED = 1


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for field in ("models_dir", "host", "port", "log_level"):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    # Explicit flags win over the environment.
    return Settings(**overrides)  # type: ignore[arg-type]


def _load(args: argparse.Namespace) -> tuple[Settings, Predictor] | None:
    """Settings, logging and the models; None (after logging why) when the models cannot load."""
    from service.inference.predictor import load_predictor

    settings = _settings(args)
    configure_logging(settings.log_level)
    try:
        return settings, load_predictor(settings)
    except StartupError as exc:
        logger.error("cannot load the models: %s", exc)
        return None


def _read_image(name: str, max_pixels: int) -> DecodedImage | None:
    """Read and decode one file; None (after saying why on stderr) when it cannot be."""
    from service.inference.preprocessing import decode_image

    path = Path(name)
    try:
        return decode_image(
            path.read_bytes(), declared=SUFFIXES.get(path.suffix.lower()), max_pixels=max_pixels
        )
    except (OSError, RequestError) as exc:
        sys.stderr.write(f"{name}: {exc.detail if isinstance(exc, RequestError) else exc}\n")
        return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.api.http import bounded_headers_protocol

    # Loaded before binding, so that a bad manifest or file ends the command with its reason.
    loaded = _load(args)
    if loaded is None:
        return EXIT_STARTUP
    settings, predictor = loaded
    uvicorn.run(
        create_app(settings, predictor=predictor),
        host=settings.host,
        port=settings.port,
        log_config=None,  # ours, set above
        access_log=False,  # the app logs one line per request, without client data
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        server_header=False,
        http=bounded_headers_protocol(settings.max_header_bytes, settings.max_headers),
    )
    predictor.close()
    return 0


def _predict(args: argparse.Namespace) -> int:
    from service.api.schemas import PredictResponse

    loaded = _load(args)
    if loaded is None:
        return EXIT_STARTUP
    settings, predictor = loaded
    status = 0
    for name in args.files:
        image = _read_image(name, settings.max_pixels)
        if image is None:
            status = EXIT_SOME_FAILED
            continue
        (prediction,) = predictor.predict([image])
        response = PredictResponse.from_prediction(prediction, uuid.uuid4().hex)
        # One JSON document per line, in the order of the arguments: the same body as /predict.
        sys.stdout.write(
            (response.model_dump_json(exclude_none=True, indent=2) if args.pretty else response.to_json())
            + "\n"
        )
        sys.stdout.flush()
    return status


def _explain(args: argparse.Namespace) -> int:
    from service.api.schemas import PredictResponse
    from service.inference.gradcam import render_all
    from service.inference.predictor import cpu_share
    from service.inference.shap import ShapBudget

    loaded = _load(args)
    if loaded is None:
        return EXIT_STARTUP
    settings, predictor = loaded
    try:
        models = predictor.explanation_request(
            args.target, args.models.split(",") if args.models else None, args.method
        )
    except RequestError as exc:
        sys.stderr.write(f"{exc.detail}\n")
        return EXIT_STARTUP
    status = 0
    for name in args.files:
        image = _read_image(name, settings.max_pixels)
        if image is None:
            status = EXIT_SOME_FAILED
            continue
        budget = ShapBudget.starting_now(args.max_evals, settings.shap_time_limit_seconds)
        try:
            result = predictor.explain(
                image, method=args.method, target=args.target, models=models, shap_budget=budget
            )
        except RequestError as exc:
            sys.stderr.write(f"{name}: {exc.detail}\n")
            status = EXIT_SOME_FAILED
            continue
        folder = args.out / Path(name).stem
        folder.mkdir(parents=True, exist_ok=True)
        rendered = render_all(image.pixels, result.all_maps, threads=cpu_share(settings))
        for model, (heat, overlay) in rendered.items():
            (folder / f"{model}-{args.method}-heatmap.png").write_bytes(heat)
            (folder / f"{model}-{args.method}-overlay.png").write_bytes(overlay)
        response = PredictResponse.from_prediction(result.prediction, uuid.uuid4().hex)
        (folder / "prediction.json").write_text(response.model_dump_json(exclude_none=True, indent=2) + "\n")
        sys.stdout.write(f"{folder}\n")
    return status


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

    from service.inference.manifest import load_manifest

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

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--models-dir",
            type=Path,
            help="folder with manifest.json (XRAY_MODELS_DIR; default: the repository's models/)",
        )
        sub.add_argument(
            "--log-level",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="log level (XRAY_LOG_LEVEL; default: INFO)",
        )

    serve = commands.add_parser("serve", help="run the HTTP service on the models")
    common(serve)
    serve.add_argument("--host", help="address to bind (XRAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (XRAY_PORT, default 8000)")
    serve.set_defaults(handler=_serve)

    predict = commands.add_parser(
        "predict", help="classify files offline; prints the /predict JSON, one line per file"
    )
    common(predict)
    predict.add_argument("files", nargs="+", metavar="FILE", help="PNG, JPEG or DICOM files")
    predict.add_argument("--pretty", action="store_true", help="indent the JSON")
    predict.set_defaults(handler=_predict)

    explain = commands.add_parser(
        "explain", help="write explanation heatmaps and overlays for files, offline"
    )
    common(explain)
    explain.add_argument("files", nargs="+", metavar="FILE", help="PNG, JPEG or DICOM files")
    explain.add_argument("--out", type=Path, required=True, help="folder; one sub-folder per file")
    explain.add_argument("--target", default="predicted", help="`predicted` or a class name")
    explain.add_argument("--models", help="comma-separated models (default: all the method can explain)")
    explain.add_argument(
        "--method", choices=("gradcam", "shap"), default="gradcam", help="explanation method"
    )
    explain.add_argument("--max-evals", type=int, default=300, help="SHAP evaluations per model")
    explain.set_defaults(handler=_explain)

    # The training subcommands (train, export, evaluate) import TensorFlow only when they run.
    from training.cli import register

    register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `xray` and return its exit status."""
    args = build_parser().parse_args(argv)
    if args.command in {"train", "export", "evaluate", "fit-input-check"}:
        configure_logging(args.log_level if getattr(args, "log_level", None) else "INFO")
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
