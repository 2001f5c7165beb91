#!/usr/bin/env bash
# One lease of a GPU machine (Keras on JAX, no TensorFlow): the three networks of gpu-h200.json
# side by side on one GPU, each for BUDGET minutes, on the pack made by
# `python -m training.packed pack --runs RUNS --size 224 --out .gpu/data.npz`.
# Writes compact weights (split into parts under 16 MiB) and the run records to OUT.
set -u
OUT="${OUT:?}"; BUDGET="${BUDGET:-6.5}"; PACK="${PACK:-.gpu/data.npz}"; WHEELS="${WHEELS:-.whl}"; RECIPE="${RECIPE:-training/recipes/gpu-h200.json}"
export KERAS_BACKEND="${KERAS_BACKEND:-jax}" XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site
fi
# Keras on JAX if this JAX works with it, else on PyTorch.
python3 -c "import keras; keras.ops.convert_to_numpy(keras.ops.ones((2, 2)) @ keras.ops.ones((2, 2)))" \
  || export KERAS_BACKEND=torch
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.txt" 2>&1
python3 -c "import jax, keras; print(jax.__version__, keras.__version__, jax.devices())" >> "$OUT/device.txt" 2>&1
work=/tmp/gpu-runs; mkdir -p "$work"
for arch in ${ARCHS:-inception_resnet_v2 efficientnet_v2_b2 scratch}; do
  levels=127; [ "$arch" = inception_resnet_v2 ] && levels=63
  python3 -m training.packed train --pack "$PACK" --config "$RECIPE" --arch "$arch" \
    --out "$work" --time-budget-minutes "$BUDGET" --levels "$levels" > "$work/$arch.log" 2>&1 &
done
wait
tar -czf "$OUT/records.tgz" -C "$work" --exclude='*.npz' .
cat "$work"/*.weights.npz > /tmp/weights.bin 2>/dev/null
ls -l "$work"/*.weights.npz | awk '{print $5, $9}' > "$OUT/weights-index.txt"
split -b 15m -d /tmp/weights.bin "$OUT/weights.part"
ls -l "$OUT"; tail -n 3 "$work"/*.log
