"""JSON Schemas of the instance and schedule documents, published in docs/schemas/.

`python -m optimizer.schemas [DIR]` regenerates them (default docs/schemas); a test checks that the
committed files equal the generated ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from optimizer.problem import Instance, Schedule

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
FILES: dict[str, type[BaseModel]] = {
    "optimizer-instance.schema.json": Instance,
    "optimizer-schedule.schema.json": Schedule,
}


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12, as pydantic generates it, plus $schema and $id)."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in FILES.items():
        schema = model.model_json_schema(mode="validation" if model is Instance else "serialization")
        out[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
    return out


def render(schema: dict[str, Any]) -> str:
    """The committed text form of a schema."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into `directory`; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
