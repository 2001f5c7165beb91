"""Train on a machine that has neither the data nor TensorFlow: a packed split in, compact weights out.

A GPU machine lent for a few minutes has Keras with JAX or PyTorch but no TensorFlow, no DICOM
stack and no copy of the data; what travels to it and back is limited in size. So:

1. `pack` (here): the split's training and validation images, decoded by the service's own
   preprocessing at the training size, as high-quality JPEG (about 13 kB an image at 224²), with
   their labels and the split's fingerprints.
2. `train` (there): `fit_network`, the package's own training loop, on the packed images, for
   each network of a recipe; then the best weights, written compactly: every large kernel as int8
   with one float32 scale per output channel, the rest float32 (IRV2's 54 M parameters in about
   50 MB instead of 217), with the run's config, history, state and summary.
3. `unpack` (here): the architecture rebuilt from its builder, the weights set by their Keras
   path, saved as the run's `best.keras`; `xray export` takes it from there as from any run.

The rounding of the kernels is measured where the weights are written: validation macro-F1 and
the largest probability change, before and after, go into the summary.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from training.config import CLASSES, TrainConfig
from xray.contract.images import equalize_batch

logger = logging.getLogger("training.packed")

JPEG_QUALITY = 95
#: Kernels at least this large (and at least 8 output channels) travel as int8.
INT8_MIN_SIZE = 4096
RUN_FILES = ("config.json", "history.csv", "state.json", "summary.json")


def pack(runs_dir: Path, size: int, out: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Write the training and validation images of `runs_dir/split.json` at `size` to `out` (.npz)."""
    from PIL import Image

    from training.cache import load_images
    from training.data import Split, labels_of

    split = Split.load(runs_dir / "split.json")
    arrays: dict[str, np.ndarray] = {}
    for name in ("train", "val"):
        records = split.part(name)
        images = load_images(records, size, cache_dir or runs_dir / "cache")
        blobs = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(image)).save(buffer, "JPEG", quality=JPEG_QUALITY)
            blobs.append(buffer.getvalue())
        arrays[f"{name}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{name}_offsets"] = np.cumsum([0, *map(len, blobs)]).astype(np.int64)
        arrays[f"{name}_labels"] = labels_of(records)
    meta = {
        "size": size,
        "classes": list(CLASSES),
        "jpeg_quality": JPEG_QUALITY,
        "split_fingerprints": {name: split.fingerprint(name) for name in ("train", "val", "test")},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out, **arrays)
    logger.info("packed %s images at %d² into %s (%.1f MB)", meta, size, out, out.stat().st_size / 1e6)
    return meta


def load_pack(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The pack's metadata and its decoded (n, size, size) uint8 images and labels per split."""
    from PIL import Image

    with np.load(path) as document:
        meta = json.loads(document["meta"].tobytes())
        data: dict[str, np.ndarray] = {}
        for name in ("train", "val"):
            blob, offsets = document[f"{name}_jpeg"].tobytes(), document[f"{name}_offsets"]
            data[f"{name}_images"] = np.stack(
                [
                    np.asarray(Image.open(io.BytesIO(blob[a:b])).convert("L"))
                    for a, b in itertools.pairwise(offsets)
                ]
            )
            data[f"{name}_labels"] = document[f"{name}_labels"]
    return meta, data


def compact_weights(model: Any, levels: int = 127) -> dict[str, np.ndarray]:
    """Every variable by its Keras path; large kernels as int8 with per-output-channel scales.

    Args:
        model: The trained network.
        levels: Largest integer magnitude of a kernel entry (127: 8 bits; 63: 7 bits, which
            deflate packs about an eighth smaller).
    """
    import keras

    arrays: dict[str, np.ndarray] = {}
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        if value.ndim >= 2 and value.size >= INT8_MIN_SIZE and value.shape[-1] >= 8:
            scale = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0) / float(levels)
            scale[scale == 0] = 1.0
            arrays[f"{variable.path}::int8"] = np.rint(value / scale).astype(np.int8)
            arrays[f"{variable.path}::scale"] = scale.astype(np.float32)
        else:
            arrays[variable.path] = value
    return arrays


def expand_weights(arrays: Any) -> dict[str, np.ndarray]:
    """The float32 value of every variable path in a `compact_weights` file."""
    values: dict[str, np.ndarray] = {}
    for key in arrays:
        if key.endswith("::scale"):
            continue
        if key.endswith("::int8"):
            path = key.removesuffix("::int8")
            values[path] = arrays[key].astype(np.float32) * arrays[f"{path}::scale"]
        else:
            values[key] = np.asarray(arrays[key], dtype=np.float32)
    return values


def assign_weights(model: Any, values: dict[str, np.ndarray]) -> None:
    """Set each of `model`'s variables from `values` by path.

    Raises:
        ValueError: A variable is missing, or a shape differs.
    """
    paths = [variable.path for variable in model.weights]
    missing = sorted(set(paths) - set(values))
    if missing:
        raise ValueError(f"{len(missing)} variable(s) missing from the weights, e.g. {missing[0]}")
    for variable in model.weights:
        value = values[variable.path]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{variable.path}: shape {value.shape} is not {tuple(variable.shape)}")
        variable.assign(value.astype(variable.dtype))


def train_packed(
    pack_path: Path, config: TrainConfig, out_dir: Path, *, checkpoint_every: int = 1000, levels: int = 127
) -> dict[str, Any]:
    """Train `config` on a pack with `fit_network`; write compact best weights and the run's records."""
    import keras
    from sklearn.metrics import f1_score

    from training.train import TrainingData, fit_network, predict_logits

    meta, data = load_pack(pack_path)
    if config.size != meta["size"]:
        raise ValueError(f"the pack holds {meta['size']}² images, the recipe asks for {config.size}²")
    run_dir = out_dir / config.arch
    result = fit_network(
        config,
        TrainingData(data["train_images"], data["train_labels"], data["val_images"], data["val_labels"]),
        run_dir,
        checkpoint_every=checkpoint_every,
    )
    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    compact = compact_weights(model, levels)
    np.savez_compressed(out_dir / f"{config.arch}.weights.npz", **compact)
    val_images = equalize_batch(data["val_images"], config.equalization)  # as `fit_network` scored them
    before = predict_logits(model, val_images, 64)
    assign_weights(model, expand_weights(compact))  # the same model: no second compilation
    after = predict_logits(model, val_images, 64)

    def softmax(logits: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    labels = data["val_labels"]
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["compact_weights"] = {
        "val_macro_f1_float32": float(f1_score(labels, before.argmax(1), average="macro")),
        "val_macro_f1_int8_kernels": float(f1_score(labels, after.argmax(1), average="macro")),
        "val_max_probability_change": float(np.abs(softmax(before) - softmax(after)).max()),
        "levels": levels,
        "bytes": (out_dir / f"{config.arch}.weights.npz").stat().st_size,
    }
    summary["pack"] = {k: meta[k] for k in ("size", "jpeg_quality", "split_fingerprints")}
    summary["device"] = _device_description()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("%s: %s", config.arch, {"best": result.best_val_macro_f1, **summary["compact_weights"]})
    for name in ("best.keras", "last.keras"):
        (run_dir / name).unlink(missing_ok=True)  # too large to travel back; the npz replaces them
    return summary


def _device_description() -> str:
    import keras

    from training.precision import detect_accelerators

    return ", ".join(device.name for device in detect_accelerators(keras.backend.backend()))


def unpack(weights_path: Path, records_dir: Path, run_dir: Path) -> Path:
    """Rebuild a run folder (with `best.keras`) from a packed run's weights and records."""
    import keras

    from training.architectures import build_model

    config = TrainConfig.model_validate_json((records_dir / "config.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (records_dir / name).is_file():
            (run_dir / name).write_bytes((records_dir / name).read_bytes())
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(config.arch, config.size, len(CLASSES), dropout=config.dropout).model
    with np.load(weights_path) as arrays:
        assign_weights(model, expand_weights({key: arrays[key] for key in arrays.files}))
    model.save(run_dir / "best.keras")
    logger.info("unpacked %s into %s", config.arch, run_dir)
    return run_dir / "best.keras"


def main(argv: list[str] | None = None) -> int:
    """`python -m training.packed pack|train|unpack …`."""
    parser = argparse.ArgumentParser(prog="python -m training.packed", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="pack a run folder's split at one size")
    p.add_argument("--runs", type=Path, required=True, help="run folder with split.json")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path)
    t = commands.add_parser("train", help="train one network of a recipe on a pack")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--config", type=Path, required=True, help="recipe: architecture → TrainConfig fields")
    t.add_argument("--arch", required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--time-budget-minutes", type=float)
    t.add_argument("--levels", type=int, default=127, help="kernel levels of the compact weights (127 or 63)")
    u = commands.add_parser("unpack", help="rebuild a run folder from packed weights")
    u.add_argument("--weights", type=Path, required=True)
    u.add_argument("--records", type=Path, required=True, help="the packed run's folder (config.json, …)")
    u.add_argument("--run", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "pack":
        pack(args.runs, args.size, args.out, args.cache)
    elif args.command == "train":
        recipe = json.loads(args.config.read_text())[args.arch]
        if args.time_budget_minutes:
            recipe["time_budget_minutes"] = args.time_budget_minutes
        args.out.mkdir(parents=True, exist_ok=True)
        train_packed(args.pack, TrainConfig(arch=args.arch, **recipe), args.out, levels=args.levels)
    else:
        unpack(args.weights, args.records, args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
