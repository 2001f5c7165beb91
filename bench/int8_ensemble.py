"""The INT8 ensemble against the float32 one: speed, and test-split accuracy through the service.

    python -m bench.int8_ensemble --models-dir models --data ../shared/data/cxr --work runs/int8

1. Every bundled float32 model is quantized with `training.quantize.quantize_int8` (what
   `xray export --quantize int8` runs: static QDQ, int8 weights per channel, uint8 activations,
   head kept float), calibrated on `--calibration` images of the training split.
2. A bundled INT8 model whose float32 original is not at hand (the export keeps it only in its
   run folder) gets a float32 twin made by `float_twin`: the same graph with its weights
   dequantized and the activation quantization removed. It has the original's architecture and
   FLOPs, so it times the float32 network exactly; its weights are the INT8 grid's, so its
   accuracy is close to, not equal to, the original float model's (the table says which rows
   this applies to; the original's figures are in the manifest's `quantization` entry).
3. Two model folders, all float32 and all INT8, with the bundled manifest (temperatures,
   ensembles) are timed, each model alone with every core at batch 1 and 8 and the whole
   ensemble through the service's predictor, and evaluated on the test split (re-derived and
   checked against the manifest's fingerprint) through the service's predictor.

Prints Markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import publish
from service.core.config import Settings
from service.inference.manifest import file_sha256, load_manifest
from service.inference.predictor import Predictor, load_predictor
from service.inference.preprocessing import DecodedImage, ImageFormat
from training.cache import load_images
from training.config import SplitConfig
from training.data import read_dataset, split_by_group
from training.evaluate import predict_records, score

logger = logging.getLogger("bench.int8_ensemble")


def float_twin(int8_path: Path, out_path: Path) -> None:
    """Write the float32 network of a QDQ model: weights dequantized, activation Q/DQ pairs removed.

    Args:
        int8_path: A QDQ model (QuantizeLinear/DequantizeLinear around float operators).
        out_path: Where the float32 graph goes.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_path))
    graph = model.graph
    initializers = {item.name: item for item in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    rename: dict[str, str] = {}
    dropped: set[str] = set()
    folded: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in initializers:  # a weight or bias: fold the dequantization into a float tensor
            values = numpy_helper.to_array(initializers[source]).astype(np.float32)
            scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            zero = (
                numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
                if len(node.input) > 2 and node.input[2]
                else np.zeros_like(scale)
            )
            axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * values.ndim
                shape[axis % values.ndim] = scale.size
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            folded.append(numpy_helper.from_array((values - zero) * scale, node.output[0]))
            dropped.add(node.name)
        elif source in producers and producers[source].op_type == "QuantizeLinear":
            # An activation's Q -> DQ pair: its consumers read the float tensor directly.
            rename[node.output[0]] = producers[source].input[0]
            dropped.update((node.name, producers[source].name))
    kept = [node for node in graph.node if node.name not in dropped]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = rename[name]
    for output in graph.output:
        if output.name in rename:
            raise ValueError(f"graph output {output.name!r} is a dequantized activation")
    used = {name for node in kept for name in node.input}
    remaining = [item for item in graph.initializer if item.name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend([*remaining, *folded])
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))


def _median_seconds(call: Callable[[], object], repeat: int) -> float:
    for _ in range(2):
        call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _folder(models_dir: Path, out: Path, files: dict[str, Path]) -> Path:
    """A models folder with the bundled manifest and `files` in place of the bundled ones."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((models_dir / "manifest.json").read_text())
    for entry in manifest["models"]:
        source = files[entry["name"]]
        if source.parent.resolve() != out.resolve():
            shutil.copyfile(source, out / source.name)
        entry["file"] = source.name
        entry["sha256"] = file_sha256(out / source.name)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def _timings(folder: Path, repeat: int) -> dict[str, float]:
    """Milliseconds: each model alone (every core) at batch 1 and 8, and the service's predictor."""
    result: dict[str, float] = {}
    rng = np.random.default_rng(0)
    alone = load_predictor(Settings(models_dir=folder, model_execution="sequential"))
    for name, model in alone.models.items():
        spec = model.entry.input
        for batch in (1, 8):
            tensor = model.from_gray(rng.integers(0, 256, (batch, spec.height, spec.width)).astype(np.uint8))
            result[f"{name}_b{batch}"] = 1000 * _median_seconds(functools.partial(model.run, tensor), repeat)
    alone.close()
    served = load_predictor(Settings(models_dir=folder))
    first = next(iter(served.models.values())).entry.input
    pixels = rng.integers(0, 256, (first.height, first.width)).astype(np.uint8)
    for batch in (1, 8):
        images = [DecodedImage(pixels=pixels, format=ImageFormat.PNG)] * batch
        call = functools.partial(served.predict, images)
        result[f"predictor_b{batch}"] = 1000 * _median_seconds(call, repeat)
    served.close()
    return result


def _accuracy(predictor: Predictor, records: list[Any]) -> dict[str, float]:
    pooled = score(predict_records(predictor, records), list(predictor.classes))["pooled"]
    return {name: pooled[name]["macro_f1"] for name in (*predictor.models, "classic", "confidence")}


def main() -> None:
    """Quantize, build both folders, time and evaluate them, and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, required=True, help="the labelled data (labels.csv)")
    parser.add_argument("--work", type=Path, default=Path("runs/int8"))
    parser.add_argument("--calibration", type=int, default=64, help="training images to calibrate on")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("runs/bench/int8_ensemble.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from training.quantize import quantize_int8

    manifest = load_manifest(args.models_dir)
    split = split_by_group(read_dataset(args.data), SplitConfig())
    recorded = {entry.data.get("split_fingerprints", {}).get("test") for entry in manifest.models}
    if recorded != {split.fingerprint("test")}:
        raise SystemExit("the data or the split differs from the one the bundled models were evaluated on")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    floats: dict[str, Path] = {}
    int8s: dict[str, Path] = {}
    twins: list[str] = []
    rng = np.random.default_rng(0)
    picks = rng.choice(len(split.train), size=min(args.calibration, len(split.train)), replace=False)
    calibration_records = [split.train[int(i)] for i in sorted(picks)]
    for entry in manifest.models:
        bundled = args.models_dir / entry.file
        if entry.quantization is None:
            floats[entry.name] = bundled
            int8s[entry.name] = work / f"{entry.name}.int8.onnx"
            images = np.asarray(load_images(calibration_records, entry.input.height, work / "cache"))
            started = time.perf_counter()
            quantize_int8(bundled, int8s[entry.name], images)
            logger.info("quantized %s in %.0f s", entry.name, time.perf_counter() - started)
        else:
            int8s[entry.name] = bundled
            floats[entry.name] = work / f"{entry.name}.float-twin.onnx"
            float_twin(bundled, floats[entry.name])
            twins.append(entry.name)
    folders = {
        "float32": _folder(args.models_dir, work / "float32", floats),
        "int8": _folder(args.models_dir, work / "int8", int8s),
    }
    timings = {kind: _timings(folder, args.repeat) for kind, folder in folders.items()}
    accuracy = {
        kind: _accuracy(load_predictor(Settings(models_dir=folder)), split.test)
        for kind, folder in folders.items()
    }
    names = [entry.name for entry in manifest.models]
    title = f"{os.cpu_count()} CPUs; test split, {len(split.test)} images, pooled macro-F1"
    rows: list[dict[str, Any]] = []
    for name in names:
        row: dict[str, Any] = {"model": name + (" (float32: twin)" if name in twins else "")}
        for batch in (1, 8):
            fp32, int8 = timings["float32"][f"{name}_b{batch}"], timings["int8"][f"{name}_b{batch}"]
            row |= {f"b{batch}_float_ms": round(fp32, 1), f"b{batch}_int8_ms": round(int8, 1)}
            row[f"b{batch}_speedup"] = round(fp32 / int8, 2)
        row["test_macro_f1_float"] = round(accuracy["float32"][name], 4)
        row["test_macro_f1_int8"] = round(accuracy["int8"][name], 4)
        rows.append(row)
    publish(f"INT8 against float32, per model alone ({title})", rows, args.json.with_suffix(".models.json"))
    speed: list[dict[str, Any]] = []
    for batch in (1, 8):
        for how, keys in (
            ("models one after another (sum of the above)", [f"{name}_b{batch}" for name in names]),
            ("the service's predictor (side by side)", [f"predictor_b{batch}"]),
        ):
            fp32 = sum(timings["float32"][key] for key in keys)
            int8 = sum(timings["int8"][key] for key in keys)
            speed.append(
                {
                    "ensemble of three": how,
                    "batch": batch,
                    "float_ms": round(fp32, 1),
                    "int8_ms": round(int8, 1),
                    "speedup": round(fp32 / int8, 2),
                }
            )
    publish("INT8 ensemble against float32: speed", speed, args.json.with_suffix(".speed.json"))
    quality = [
        {
            "ensemble": ensemble,
            "test_macro_f1_float": round(accuracy["float32"][ensemble], 4),
            "test_macro_f1_int8": round(accuracy["int8"][ensemble], 4),
            "points_lost": round(100 * (accuracy["float32"][ensemble] - accuracy["int8"][ensemble]), 2),
        }
        for ensemble in ("classic", "confidence")
    ]
    publish(
        f"INT8 ensemble against float32: accuracy ({title})", quality, args.json.with_suffix(".quality.json")
    )
    args.json.write_text(
        json.dumps({"models": rows, "speed": speed, "quality": quality, "twins": twins}, indent=2)
    )


if __name__ == "__main__":
    main()
