"""Service settings, read from the environment with the `XRAY_` prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from xray.contract.providers import PROVIDER_ALIASES


def default_models_dir() -> Path:
    """Return the repository's `models/` folder, or `./models` outside a source checkout."""
    repo_models = Path(__file__).resolve().parents[2] / "models"
    return repo_models if repo_models.is_dir() else Path("models").resolve()


def _split_csv(value: object) -> object:
    """Accept `a,b` from the environment as well as a list from Python."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything that configures the service.

    Every field can be set as an environment variable, for example `XRAY_MAX_UPLOAD_BYTES=1000000`
    or `XRAY_PROVIDERS=cuda,cpu`.
    """

    model_config = SettingsConfigDict(env_prefix="XRAY_", extra="ignore", frozen=True)

    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Folder with `manifest.json` and the files it names (ONNX models, input check).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, every request but health and metrics needs it as "
        "`Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    )

    # Limits on what a client may send.
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest upload; refused (413) while it is being read."
    )
    max_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest width x height accepted, checked from the header before decoding.",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request head (request line and headers) `xray serve` reads; beyond it, 431.",
    )
    max_headers: int = Field(
        default=100, ge=10, le=10_000, description="Most header lines in a request; beyond them, 431."
    )
    max_json_bytes: int = Field(
        default=16 * 1024,
        gt=0,
        description="Largest JSON request body (`/pacs/analyze`), read only after the API key is checked.",
    )
    max_stow_parts: int = Field(
        default=500,
        ge=1,
        description="Most instances in one STOW-RS request, counted before any is parsed.",
    )
    max_jpeg_scans: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most scans a JPEG (or a DICOM's JPEG frame) may hold, counted before decoding: "
        "each scan is a pass of the decoder, and a progressive JPEG has about ten.",
    )
    max_decode_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Longest a PNG or JPEG decode may run before it is stopped (413), checked between "
        "the decoder's 64 KB reads; a DICOM frame is decoded in one call, bounded by the pixel and "
        "scan limits instead. A decode also stops once its client has gone.",
    )

    # Runtime.
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cpu"],
        description="onnxruntime execution providers in priority order, comma-separated: `cpu`, `cuda`, "
        "`tensorrt` (e.g. `cuda,cpu`). A fallback is logged and shown by `/models`, never silent.",
    )
    strict_providers: bool = Field(
        default=False,
        description="Refuse to start when a requested provider is unavailable instead of "
        "falling back to the next one (the fallback is always logged and reported).",
    )
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads per onnxruntime session; default: the CPU quota of the container.",
    )
    inference_workers: int = Field(
        default=1, ge=1, le=64, description="Threads that decode images and run the models."
    )
    model_execution: Literal["parallel", "sequential"] = Field(
        default="parallel",
        description="`parallel`: the models of one batch run side by side on the CPU quota's "
        "threads, longest work first, large batches split among them, each session with its share "
        "of the quota (at least one thread); `sequential`: one after another, each with the whole "
        "quota. Measured by `python -m bench.serving`; parallel is faster here at every batch "
        "size, because one small network cannot keep several cores busy.",
    )
    max_queue: int = Field(
        default=32,
        ge=1,
        description="Requests admitted to decoding and inference at once; more get 503.",
    )

    batch_max_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Most images per micro-batch of /predict requests; 1 turns micro-batching off.",
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="How long an idle service waits for more /predict requests to batch with one. "
        "0: a lone request runs at once, and requests that arrive while a batch runs form the next "
        "one (measured: the same throughput under load as waiting 2 ms, and 2 ms less latency idle).",
    )

    # The input check.
    reject_out_of_distribution: bool = Field(
        default=False,
        description="Refuse an image the input check finds unlike the training radiographs with a 422 "
        "problem (`out-of-distribution`) instead of answering it marked uncertain.",
    )

    # Explanations.
    explain_max_side: int = Field(
        default=1024,
        ge=64,
        le=16384,
        description="/explain renders its maps, overlays and image with the longer side at most this "
        "(a request may ask for less with `max_side`): it bounds the answer's size and the memory "
        "of a request whatever the upload's size.",
    )
    shap_max_evals: int = Field(
        default=1000, ge=10, description="Most SHAP model evaluations per model a request may ask for."
    )
    shap_default_evals: int = Field(default=300, ge=10, description="SHAP evaluations per model by default.")
    shap_time_limit_seconds: float = Field(
        default=60.0, gt=0, description="A SHAP explanation still running after this is stopped with a 422."
    )

    # PACS (DICOMweb): where /pacs/analyze fetches images and where results are written back.
    pacs_url: str | None = Field(
        default=None, description="DICOMweb root of the PACS, e.g. `http://pacs:8042/dicom-web`."
    )
    pacs_username: str | None = Field(default=None, description="Basic auth user for the PACS.")
    pacs_password: SecretStr | None = Field(default=None, description="Basic auth password for the PACS.")
    pacs_token: SecretStr | None = Field(
        default=None, description="Bearer token for the PACS (used instead of basic auth)."
    )
    pacs_timeout_seconds: float = Field(default=30.0, gt=0, description="Per request to the PACS.")
    pacs_write_sr: bool = Field(
        default=True, description="Write a Structured Report back per analysed image."
    )
    pacs_write_secondary_capture: bool = Field(
        default=True, description="Write the Grad-CAM overlay back as an RGB Secondary Capture."
    )

    # HTTP.
    host: str = Field(default="127.0.0.1", description="Address `xray serve` listens on (also `--host`).")
    port: int = Field(
        default=8000, ge=1, le=65535, description="Port `xray serve` listens on (also `--port`)."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty: CORS off."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`."
    )
    graceful_shutdown_seconds: int = Field(
        default=30, ge=0, description="How long SIGTERM waits for the requests in flight."
    )

    @field_validator("providers", "cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        known = set(PROVIDER_ALIASES) | set(PROVIDER_ALIASES.values())
        unknown = [item for item in value if item not in known]
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; use any of {sorted(PROVIDER_ALIASES)}")
        if not value:
            raise ValueError("at least one provider is needed")
        return value
