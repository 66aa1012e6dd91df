"""The committed JSON Schemas equal the generated ones; example files validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.cases import CASES
from optimizer.problem import Instance
from optimizer.schemas import SCHEMA_DIR, render, schemas

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.mark.parametrize("name", sorted(schemas()))
def test_committed_schema_is_current(name: str) -> None:
    """Regenerate with `python -m optimizer.schemas` when the models change."""
    assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == render(schemas()[name])


def test_schema_names_the_documented_fields() -> None:
    """The instance schema has the fields issue 4 lists."""
    text = json.dumps(schemas()["optimizer-instance.schema.json"])
    for field in (
        "import_limit_kw",
        "export_limit_kw",
        "peak_price_per_kw",
        "bidirectional",
        "unmet_penalty_per_kwh",
    ):
        assert field in text


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    """Every example instance file is a valid Instance."""
    Instance.model_validate_json(path.read_text(encoding="utf-8"))


def test_cases_build() -> None:
    """Every seed case generator returns a valid Instance."""
    for make in CASES.values():
        assert isinstance(make(), Instance)


def test_format_doc_example_is_valid() -> None:
    """The JSON example in docs/optimizer-format.md is a valid instance."""
    text = (EXAMPLES.parent / "optimizer-format.md").read_text(encoding="utf-8")
    block = text.split("```json", 1)[1].split("```", 1)[0]
    inst = Instance.model_validate_json(block)
    assert inst.objective.kind == "service_time" and len(inst.evs) == 2
