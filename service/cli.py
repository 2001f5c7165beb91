"""The serving subcommands of `xray`: `serve`, `predict` and `explain` (`xray.cli` dispatches).

They need only the service's dependencies, and never import `training`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.config import Settings
from service.core.logging import configure_logging
from xray.contract.decoders import SUFFIXES
from xray.contract.errors import RequestError, StartupError

if TYPE_CHECKING:
    from service.inference.predictor import Predictor
    from xray.contract.images import DecodedImage

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
    from xray.contract.preprocessing import decode_image

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
    from service.core.concurrency import ConcurrencyPlan, ServicePools
    from service.inference.explanations import Explainer, ExplanationRequest

    loaded = _load(args)
    if loaded is None:
        return EXIT_STARTUP
    settings, predictor = loaded
    pools = ServicePools(ConcurrencyPlan.from_settings(settings, len(predictor.models)))
    explainer = Explainer(
        predictor, shap_time_limit=settings.shap_time_limit_seconds, render_pool=pools.render
    )
    try:
        chosen = args.models.split(",") if args.models else None
        models = explainer.models_for(args.target, chosen, args.method)
    except RequestError as exc:
        sys.stderr.write(f"{exc.detail}\n")
        return EXIT_STARTUP
    request = ExplanationRequest(
        method=args.method, target=args.target, models=tuple(models), max_evals=args.max_evals
    )
    status = 0
    try:
        for name in args.files:
            image = _read_image(name, settings.max_pixels)
            if image is None:
                status = EXIT_SOME_FAILED
                continue
            try:
                rendered = explainer.explain(image, request)
            except RequestError as exc:
                sys.stderr.write(f"{name}: {exc.detail}\n")
                status = EXIT_SOME_FAILED
                continue
            folder = args.out / Path(name).stem
            folder.mkdir(parents=True, exist_ok=True)
            for model, (heat, overlay) in rendered.pngs.items():
                (folder / f"{model}-{args.method}-heatmap.png").write_bytes(heat)
                if overlay is not None:
                    (folder / f"{model}-{args.method}-overlay.png").write_bytes(overlay)
            response = PredictResponse.from_prediction(rendered.result.prediction, uuid.uuid4().hex)
            body = response.model_dump_json(exclude_none=True, indent=2)
            (folder / "prediction.json").write_text(body + "\n")
            sys.stdout.write(f"{folder}\n")
    finally:
        pools.shutdown()
    return status


def register(commands: Any) -> None:
    """Add the serving subcommands to the `xray` parser's subparsers."""

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
