"""README's references stay true: the settings reference and the JSON Schemas match the code."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_settings_reference_is_current():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from settings_table import render
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "SETTINGS.md").read_text() == render(), "run: python docs/settings_table.py > docs/SETTINGS.md"


def test_json_schemas_are_current(tmp_path):
    from inspector.wire import export_schemas

    fresh = {p.name: json.loads(p.read_text()) for p in export_schemas(tmp_path)}
    stored = {p.name: json.loads(p.read_text()) for p in (ROOT / "docs" / "schemas").glob("*.json")}
    assert fresh == stored, "run: inspector schemas --out docs/schemas"
