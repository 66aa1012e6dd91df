"""optimizer.plan_json writes the JSON the standard library writes (readers see the same documents)."""

from __future__ import annotations

import json

from optimizer import plan_json


def test_plan_json_is_the_standard_librarys_json() -> None:
    doc = {"plan_id": "p-1", "evses": {"CS1/1": [0.0, 7.36, 11.04, 0.001]}, "objective": None,
           "note": "departure=needs energy=needs", "limit_kw": 3500.0, "step_s": 900, "kept": False}
    text = plan_json.dumps(doc)
    assert text == json.dumps(doc, separators=(",", ":")).encode()
    assert plan_json.loads(text) == doc == plan_json.loads(text.decode())
