"""The serving benchmark: hardware ceiling, bare onnxruntime, the Keras baseline, and real HTTP.

    python -m bench.serving --models-dir models --image ../shared/data/cxr/images/normal/x.jpg

In one run, on this machine:

1. the ceiling: a large float32 matrix product through NumPy (GFLOP/s);
2. per model: FLOPs at its input size, bare onnxruntime latency at batch 1 and the throughput
   of its best batch, as achieved GFLOP/s and as a fraction of the ceiling;
3. the baseline: the same networks in TensorFlow/Keras (`model.predict` and a compiled
   `tf.function`), same input sizes, random weights (speed does not depend on the weights);
4. end to end over HTTP to `xray serve`: /predict and /explain p50/p99 for one client, and
   throughput at 1, 4, 16 and 32 concurrent clients, with the server's peak resident memory;
5. the ratios the performance targets are stated in.

Prints Markdown tables and writes one JSON file. Keras is imported only for part 3.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import publish
from bench.server import Server, throughput
from bench.timing import compared_seconds, median_seconds
from service.core.concurrency import ConcurrencyPlan
from service.core.config import Settings
from service.inference import load_predictor
from xray.contract.decoders import ImageFormat
from xray.contract.images import DecodedImage
from xray.contract.manifest import load_manifest

logger = logging.getLogger("bench.serving")

BATCHES = (1, 2, 4, 8, 16)
CLIENTS = (1, 4, 16, 32)


def ceiling(size: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of a float32 (size x size) matrix product through NumPy's BLAS."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    seconds = median_seconds(lambda: a @ b, repeat=repeat)
    return 2 * size**3 / seconds / 1e9


def keras_flops(arch: str, size: int) -> int:
    """FLOPs of one forward pass, counted on the Keras builder of the architecture."""
    from training.architectures import build_model
    from training.flops import count_flops

    return count_flops(build_model(arch, size).model)


def bare_onnxruntime(models_dir: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Per model: seconds per batch of each size, through the service's own sessions.

    Each model is measured alone with every core (sequential execution's thread count): the
    best a model can do by itself, which is what the service is compared with.
    """
    predictor = load_predictor(Settings(models_dir=models_dir, model_execution="sequential"))
    results: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(0)
    for name, model in predictor.models.items():
        spec = model.entry.input
        results[name] = {}
        for batch in BATCHES:
            tensor = model.from_gray(rng.integers(0, 256, (batch, spec.height, spec.width)).astype(np.uint8))
            call = functools.partial(model.run, tensor)
            results[name][str(batch)] = median_seconds(call, repeat=repeat, rounds=3)
    return results


def sequential_vs_parallel(models_dir: Path, repeat: int, batch: int = 1) -> dict[str, float]:
    """Seconds for one batch through the service's predictor, the models one after another or side by side.

    One after another, each session gets every core (intra-op threads = the CPU quota); side by
    side (`XRAY_MODEL_EXECUTION=parallel`), the predictor runs them on the quota's threads,
    longest work first. Whichever is faster is what the service should do. The two take turns,
    three rounds, so that both see the same machine.
    """
    rng = np.random.default_rng(0)
    predictors = {
        mode: load_predictor(Settings(models_dir=models_dir, model_execution=mode))  # type: ignore[arg-type]
        for mode in ("sequential", "parallel")
    }
    spec = next(iter(predictors["parallel"].models.values())).entry.input
    pixels = rng.integers(0, 256, (spec.height, spec.width)).astype(np.uint8)
    images = [DecodedImage(pixels=pixels, format=ImageFormat.PNG)] * batch
    calls = {mode: functools.partial(predictor.predict, images) for mode, predictor in predictors.items()}
    seconds = compared_seconds(calls, repeat=repeat)
    for predictor in predictors.values():
        predictor.close()
    return {"sequential_ms": 1000 * seconds["sequential"], "parallel_ms": 1000 * seconds["parallel"]}


def int8_versus_float(models_dir: Path, runs_dir: Path, repeat: int) -> list[dict[str, Any]]:
    """For each INT8 model whose float original is in its run folder: speed and test accuracy of both.

    The float file is the one the export kept (`runs/<model>/<model>.float.onnx`); both run with
    the service's thread settings on the same random batch. Accuracies are the test-split figures
    `xray evaluate` recorded under the model's `quantization` entry.
    """
    import onnxruntime as ort

    predictor = load_predictor(Settings(models_dir=models_dir, model_execution="sequential"))
    threads = ConcurrencyPlan.from_settings(Settings()).share
    rows = []
    for name, model in predictor.models.items():
        quantization = model.entry.quantization
        float_path = runs_dir / name / f"{name}.float.onnx"
        if quantization is None or not float_path.is_file():
            continue
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        float_session = ort.InferenceSession(str(float_path), options, providers=["CPUExecutionProvider"])
        spec = model.entry.input
        row: dict[str, Any] = {"model": name}
        for batch in (1, 8):
            tensor = model.from_gray(
                np.random.default_rng(0).integers(0, 256, (batch, spec.height, spec.width))
            )
            feeds = {spec.name: tensor}
            int8 = median_seconds(functools.partial(model.run, tensor), repeat=repeat)
            fp32 = median_seconds(functools.partial(float_session.run, None, feeds), repeat=repeat)
            row[f"b{batch}_float_ms"] = round(1000 * fp32, 1)
            row[f"b{batch}_int8_ms"] = round(1000 * int8, 1)
            row[f"b{batch}_speedup"] = round(fp32 / int8, 2)
        pooled = quantization.get("test", {}).get("pooled", {})
        row["test_macro_f1_float"] = round(pooled.get("macro_f1_float32", float("nan")), 4)
        row["test_macro_f1_int8"] = round(pooled.get("macro_f1_int8", float("nan")), 4)
        row["top1_agreement"] = round(pooled.get("top1_agreement", float("nan")), 4)
        row["mb_float_int8"] = (
            f"{quantization.get('float_bytes', 0) / 1e6:.0f} / {quantization.get('int8_bytes', 0) / 1e6:.0f}"
        )
        rows.append(row)
    return rows


def _keras_timings(arch: str, size: int, repeat: int) -> dict[str, float]:
    import tensorflow as tf

    from training.architectures import build_model

    model = build_model(arch, size).model
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 1)).astype(np.float32)
    batch = np.repeat(image, 8, axis=0)
    compiled = tf.function(lambda x: model(x, training=False))
    one, eight = tf.constant(image), tf.constant(batch)
    return {
        "predict_b1": median_seconds(lambda: model.predict(image, verbose=0), repeat=repeat),
        "predict_b8_per_image": median_seconds(lambda: model.predict(batch, verbose=0), repeat=repeat) / 8,
        "function_b1": median_seconds(lambda: compiled(one), repeat=repeat),
        "function_b8_per_image": median_seconds(lambda: compiled(eight), repeat=repeat) / 8,
    }


def keras_baseline(models: dict[str, int], repeat: int) -> dict[str, dict[str, float]]:
    """Per architecture: seconds per image of `model.predict` and of a compiled `tf.function`."""
    return {arch: _keras_timings(arch, size, repeat) for arch, size in models.items()}


def latency(server: Server, path: str, body: bytes, repeat: int) -> dict[str, float]:
    """p50 and p99 of sequential requests from one client, ms."""
    for _ in range(2):
        server.request("POST", path, body)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        status, _, _ = server.request("POST", path, body)
        times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}")
    times.sort()
    return {
        "p50_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
    }


def main() -> None:
    """Run every part and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--image", type=Path, required=True, help="a radiograph (JPEG) for the HTTP part")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--skip-keras", action="store_true")
    parser.add_argument(
        "--runs", type=Path, default=Path("runs"), help="run folders with the float originals"
    )
    parser.add_argument("--json", type=Path, default=Path("runs/bench/serving.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = load_manifest(args.models_dir)
    sizes = {entry.name: entry.input.height for entry in manifest.models}
    usable = ConcurrencyPlan.from_settings(Settings()).share
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {usable} CPUs usable"
    report: dict[str, Any] = {"machine": machine}

    logger.info("1. ceiling")
    report["ceiling_gflops"] = peak = ceiling()
    logger.info("2. bare onnxruntime")
    flops = {name: keras_flops(name, size) for name, size in sizes.items()}
    bare = bare_onnxruntime(args.models_dir, args.repeat)
    rows = []
    for name, seconds in bare.items():
        best = min(BATCHES, key=lambda b: seconds[str(b)] / b)
        per_image = seconds[str(best)] / best
        quantized = manifest.model(name).quantization is not None
        rows.append(
            {
                "model": name + (" (INT8)" if quantized else ""),
                "input": sizes[name],
                "gflops": round(flops[name] / 1e9, 2),
                "b1_ms": round(1000 * seconds["1"], 1),
                "b1_gflops_s": round(flops[name] / seconds["1"] / 1e9, 1),
                "best_batch": best,
                "best_ms_per_image": round(1000 * per_image, 1),
                "best_gflops_s": round(flops[name] / per_image / 1e9, 1),
                "fraction_of_ceiling": round(flops[name] / per_image / 1e9 / peak, 2),
            }
        )
    publish(
        f"Bare onnxruntime, {machine}; ceiling {peak:.0f} GFLOP/s (float32 NumPy matmul)",
        rows,
        args.json.with_suffix(".bare.json"),
    )
    report["bare"] = rows
    sum_b1 = sum(seconds["1"] for seconds in bare.values())
    modes = [
        {
            "batch": batch,
            **{
                k: round(v, 1) for k, v in sequential_vs_parallel(args.models_dir, args.repeat, batch).items()
            },
        }
        for batch in (1, 4, 8)
    ]
    publish(
        "The service's predictor on one batch: the models one after another vs side by side (ms)",
        modes,
        args.json.with_suffix(".modes.json"),
    )
    report["modes"] = modes
    quantized = int8_versus_float(args.models_dir, args.runs, args.repeat)
    if quantized:
        publish("INT8 against its float32 original", quantized, args.json.with_suffix(".int8.json"))
        report["int8"] = quantized
    ensemble_best = 1 / sum(min(s[str(b)] / b for b in BATCHES) for s in bare.values())

    if not args.skip_keras:
        logger.info("3. Keras baseline")
        keras = keras_baseline(sizes, max(5, args.repeat // 4))
        keras_rows = [
            {"model": arch, **{k: round(1000 * v, 1) for k, v in values.items()}}
            for arch, values in keras.items()
        ]
        publish("TensorFlow/Keras baseline (ms per image)", keras_rows, args.json.with_suffix(".keras.json"))
        report["keras"] = keras_rows
        keras_predict_throughput = 1 / sum(v["predict_b8_per_image"] for v in keras.values())
    else:
        keras_predict_throughput = float("nan")

    logger.info("4. HTTP")
    body = args.image.read_bytes()
    server = Server(args.models_dir)
    try:
        # Wait for the service's background SHAP compilation, so it does not share the cores.
        server.request("POST", "/explain?method=shap&max_evals=10", body)
        http_rows = [{"request": "/predict", **latency(server, "/predict", body, args.repeat)}]
        http_rows.append(
            {"request": "/explain gradcam", **latency(server, "/explain", body, max(5, args.repeat // 2))}
        )
        for row in http_rows:
            row.update({k: round(v, 1) for k, v in row.items() if isinstance(v, float)})
        rates = {clients: throughput(server, body, clients, args.seconds) for clients in CLIENTS}
        rss = server.peak_rss_mb()
    finally:
        server.stop()
    publish("HTTP, one client (ms)", http_rows, args.json.with_suffix(".http.json"))
    publish(
        f"HTTP /predict throughput (requests/s); server peak RSS {rss:.0f} MB",
        [{"clients": c, "requests_per_s": round(r, 2)} for c, r in rates.items()],
        args.json.with_suffix(".throughput.json"),
    )
    ratios = [
        {"ratio": "/predict p50 / sum of bare batch-1 latencies (target <= 1.15)",
         "value": round(http_rows[0]["p50_ms"] / (1000 * sum_b1), 2)},
        {"ratio": "throughput at 16 clients / bare best-batch ensemble throughput (target >= 0.9)",
         "value": round(rates[16] / ensemble_best, 2)},
        {"ratio": "throughput at 16 clients / Keras model.predict (target >= 2)",
         "value": round(rates[16] / keras_predict_throughput, 2)},
        {"ratio": "server peak RSS, MB (target <= 1500)", "value": round(rss)},
        {"ratio": "/explain p50 / /predict p50, one client (issue 5: <= 1.1)",
         "value": round(http_rows[1]["p50_ms"] / http_rows[0]["p50_ms"], 2)},
    ]  # fmt: skip
    publish("Ratios", ratios, args.json.with_suffix(".ratios.json"))
    report.update({"http": http_rows, "throughput": rates, "peak_rss_mb": rss, "ratios": ratios})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
