"""Writing `models/manifest.json`: entries added or replaced, validated by the service's schema."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.architectures import ARCHITECTURES, default_cascade_order
from training.config import CLASSES
from xray.contract.manifest import MANIFEST_NAME, Manifest


def read_document(models_dir: Path) -> dict[str, Any]:
    """The manifest as a dict, or a new empty one."""
    path = models_dir / MANIFEST_NAME
    if path.is_file():
        document: dict[str, Any] = json.loads(path.read_text())
        return document
    return {"schema_version": 1, "classes": list(CLASSES), "models": [], "ensembles": None}


def write_document(models_dir: Path, document: dict[str, Any]) -> Manifest:
    """Validate with the service's schema, then write atomically.

    Raises:
        pydantic.ValidationError: The document breaks the contract (nothing is written).
    """
    manifest = Manifest.model_validate(document)
    path = models_dir / MANIFEST_NAME
    partial = path.with_suffix(f".partial-{os.getpid()}")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return manifest


def upsert_model(models_dir: Path, entry: dict[str, Any]) -> Manifest:
    """Add a model entry, or replace the one with the same name; keep valid ensemble settings."""
    document = read_document(models_dir)
    models = [model for model in document["models"] if model["name"] != entry["name"]]
    models.append(entry)
    order_index = {name: i for i, name in enumerate(ARCHITECTURES)}
    document["models"] = sorted(models, key=lambda m: order_index.get(m["name"], len(order_index)))
    # The input check's statistics describe the previous graphs: refit them (`fit_input_check_step`).
    document.pop("input_check", None)
    names = [model["name"] for model in document["models"]]
    ensembles = document.get("ensembles")
    if not ensembles or any(name not in names for name in ensembles["confidence"]["order"]):
        # The contract's default cascade (docs/api.md), until one is chosen on validation data.
        order = [name for name in default_cascade_order() if name in names] or names[:1]
        document["ensembles"] = {
            "confidence": {"order": order, "tau": 0.90},
            "abstain_below": 0.5,
            "selection": {"method": "the contract's defaults; not yet chosen on validation data"},
        }
    return write_document(models_dir, document)


def set_ensembles(models_dir: Path, ensembles: dict[str, Any]) -> Manifest:
    """Replace the ensemble settings."""
    document = read_document(models_dir)
    document["ensembles"] = ensembles
    return write_document(models_dir, document)


def update_model_fields(models_dir: Path, name: str, **fields: Any) -> Manifest:
    """Set top-level fields of one model entry (for example `temperature` or `metrics`)."""
    document = read_document(models_dir)
    for model in document["models"]:
        if model["name"] == name:
            model.update(fields)
            break
    else:
        raise KeyError(name)
    return write_document(models_dir, document)
