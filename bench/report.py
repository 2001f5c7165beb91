"""Printing a benchmark's rows as a Markdown table, and saving them as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def publish(title: str, rows: list[dict[str, Any]], json_path: Path) -> None:
    """Write `rows` to stdout as a Markdown table under `title`, and to `json_path`."""
    header = list(rows[0])
    table = [
        title,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows),
    ]
    sys.stdout.write("\n".join(table) + "\n")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(rows, indent=2))
