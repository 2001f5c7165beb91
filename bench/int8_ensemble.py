"""The INT8 ensemble against the float32 one: speed, and test-split accuracy through the service.

    python -m bench.int8_ensemble --models-dir models --data ../shared/data/cxr --work runs/int8

1. Every bundled float32 model is quantized with `training.quantize.quantize_int8` (what
   `xray export --quantize int8` runs: static QDQ, 7-bit int8 weights per channel, uint8
   activations, head kept float), calibrated on `--calibration` images of the training split.
2. A bundled INT8 model takes its float32 original from its run folder (`--runs`, where the
   export keeps it); without one it gets a float32 twin made by `float_twin`: the same graph
   with its weights dequantized, the activation quantization removed, and the ReLUs that the
   quantizer folded into uint8 ranges put back. It has the original's architecture and FLOPs,
   so it times the float32 network exactly; its weights are on the INT8 grid, so its accuracy
   is close to, not equal to, the original's (the twin of an 8-bit IRV2 file scored the
   original's test macro-F1 and accuracy to four places).
3. Three model folders with the bundled manifest (temperatures, ensembles): all float32, all
   INT8, and INT8 only for the models it makes faster at batch 1 and 8. Each is timed (every
   model alone with every core at batch 1 and 8, and the ensemble through the service's
   predictor) and evaluated on the test split (re-derived and checked against the manifest's
   fingerprint) through the service's predictor.

Prints Markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import publish
from bench.timing import compared_seconds
from service.core.config import Settings
from service.inference.predictor import Predictor, load_predictor
from training.cache import load_images
from training.config import SplitConfig
from training.data import read_dataset, split_by_group
from training.evaluate import predict_records, score
from xray.contract.decoders import ImageFormat
from xray.contract.images import DecodedImage, equalize_batch
from xray.contract.manifest import file_sha256, load_manifest

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
    relus: list[onnx.NodeProto] = []
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
            quantize = producers[source]
            dropped.update((node.name, quantize.name))
            zero = initializers.get(quantize.input[2]) if len(quantize.input) > 2 else None
            if (
                zero is not None
                and zero.data_type == onnx.TensorProto.UINT8
                and not numpy_helper.to_array(zero).any()
            ):
                # onnxruntime's quantizer drops a Relu whose output range [0, max] the uint8
                # quantization (zero point 0) already enforces: the float network needs it back.
                # On a tensor that was never negative in calibration it clips as INT8 does.
                relus.append(
                    onnx.helper.make_node(
                        "Relu", [quantize.input[0]], [node.output[0]], name=f"{node.name}_relu"
                    )
                )
            else:  # any other activation's Q -> DQ pair: its consumers read the float tensor
                rename[node.output[0]] = quantize.input[0]
    kept = [node for node in graph.node if node.name not in dropped]
    # Each Relu goes where its DequantizeLinear was, so the node order stays topological.
    by_output = {relu.output[0]: relu for relu in relus}
    ordered = []
    for node in graph.node:
        if node.name not in dropped:
            ordered.append(node)
        elif node.op_type == "DequantizeLinear" and node.output[0] in by_output:
            ordered.append(by_output[node.output[0]])
    kept = ordered
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


def _timings(folders: dict[str, Path], repeat: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per folder, milliseconds: each model alone (every core) at batch 1 and 8, and the predictor.

    The folders take turns, `rounds` times, and each figure is the best of its rounds' medians,
    so that a slow spell of this shared machine does not land on one side of a comparison.
    """
    rng = np.random.default_rng(0)
    calls: dict[str, dict[str, Callable[[], object]]] = {kind: {} for kind in folders}
    loaded: list[Predictor] = []
    for kind, folder in folders.items():
        alone = load_predictor(Settings(models_dir=folder, model_execution="sequential"))
        served = load_predictor(Settings(models_dir=folder))
        loaded += [alone, served]
        for name, model in alone.models.items():
            spec = model.entry.input
            for batch in (1, 8):
                pixels = rng.integers(0, 256, (batch, spec.height, spec.width)).astype(np.uint8)
                calls[kind][f"{name}_b{batch}"] = functools.partial(model.run, model.from_gray(pixels))
        first = next(iter(served.models.values())).entry.input
        image = DecodedImage(
            rng.integers(0, 256, (first.height, first.width)).astype(np.uint8), ImageFormat.PNG
        )
        for batch in (1, 8):
            calls[kind][f"predictor_b{batch}"] = functools.partial(served.predict, [image] * batch)
    result: dict[str, dict[str, float]] = {kind: {} for kind in folders}
    for key in calls[next(iter(folders))]:
        seconds = compared_seconds({kind: calls[kind][key] for kind in folders}, repeat=repeat, rounds=rounds)
        for kind, value in seconds.items():
            result[kind][key] = 1000 * value
    for predictor in loaded:
        predictor.close()
    return result


def _accuracy(predictor: Predictor, records: list[Any]) -> dict[str, float]:
    pooled = score(predict_records(predictor, records), list(predictor.classes))["pooled"]
    return {name: pooled[name]["macro_f1"] for name in (*predictor.models, "classic", "confidence")}


def main() -> None:
    """Quantize, build the folders, time and evaluate them, and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, required=True, help="the labelled data (labels.csv)")
    parser.add_argument("--work", type=Path, default=Path("runs/int8"))
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs"),
        help="run folders: a float32 original kept there by the export (RUNS/NAME/NAME.float.onnx) "
        "is used instead of a twin",
    )
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
            images = equalize_batch(images, entry.input.equalization)  # as the service feeds the graph
            started = time.perf_counter()
            quantize_int8(bundled, int8s[entry.name], images)
            logger.info("quantized %s in %.0f s", entry.name, time.perf_counter() - started)
        elif (kept := args.runs / entry.name / f"{entry.name}.float.onnx").is_file():
            int8s[entry.name], floats[entry.name] = bundled, kept
            logger.info("%s: float32 from %s", entry.name, kept)
        else:
            int8s[entry.name] = bundled
            floats[entry.name] = work / f"{entry.name}.float-twin.onnx"
            float_twin(bundled, floats[entry.name])
            twins.append(entry.name)
    names = [entry.name for entry in manifest.models]
    folders = {
        "float32": _folder(args.models_dir, work / "float32", floats),
        "int8": _folder(args.models_dir, work / "int8", int8s),
    }
    timings = _timings(folders, args.repeat)
    # What a deployment would serve: INT8 only where it is faster, at batch 1 and at batch 8.
    faster = [
        name
        for name in names
        if all(timings["int8"][f"{name}_b{b}"] < timings["float32"][f"{name}_b{b}"] for b in (1, 8))
    ]
    if set(faster) != set(names):
        mixed = {name: int8s[name] if name in faster else floats[name] for name in names}
        folders["int8 where faster"] = _folder(args.models_dir, work / "mixed", mixed)
        timings = _timings(folders, args.repeat)
    accuracy = {
        kind: _accuracy(load_predictor(Settings(models_dir=folder)), split.test)
        for kind, folder in folders.items()
    }
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
            ("one after another (sum of the models alone)", [f"{name}_b{batch}" for name in names]),
            ("the service's predictor (side by side)", [f"predictor_b{batch}"]),
        ):
            row = {"ensemble of three": how, "batch": batch}
            fp32 = sum(timings["float32"][key] for key in keys)
            for kind in folders:
                ms = sum(timings[kind][key] for key in keys)
                row[f"{kind} ms"] = round(ms, 1)
                if kind != "float32":
                    row[f"{kind} speedup"] = round(fp32 / ms, 2)
            speed.append(row)
    publish(
        f"INT8 ensemble against float32: speed (INT8 where faster: {', '.join(faster) or 'none'})",
        speed,
        args.json.with_suffix(".speed.json"),
    )
    quality = [
        {
            "ensemble": ensemble,
            **{f"{kind} macro-F1": round(accuracy[kind][ensemble], 4) for kind in folders},
            **{
                f"{kind}: points lost": round(
                    100 * (accuracy["float32"][ensemble] - accuracy[kind][ensemble]), 2
                )
                for kind in folders
                if kind != "float32"
            },
        }
        for ensemble in ("classic", "confidence")
    ]
    publish(
        f"INT8 ensemble against float32: accuracy ({title})", quality, args.json.with_suffix(".quality.json")
    )
    report = {
        "models": rows,
        "speed": speed,
        "quality": quality,
        "float32_twins": twins,
        "int8_where_faster": faster,
    }
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
