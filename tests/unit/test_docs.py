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
    from inspector.contracts.wire import export_schemas

    fresh = {p.name: json.loads(p.read_text()) for p in export_schemas(tmp_path)}
    stored = {p.name: json.loads(p.read_text()) for p in (ROOT / "docs" / "schemas").glob("*.json")}
    assert fresh == stored, "run: inspector schemas --out docs/schemas"


def test_paths_and_tests_named_in_the_docs_exist():
    """Every repository path and test function README.md and docs/PERFORMANCE.md name is there."""
    import re

    for doc in (ROOT / "README.md", ROOT / "docs" / "PERFORMANCE.md"):
        text = doc.read_text()
        paths = set(re.findall(r"\b((?:bench|tests|inspector|trainer|docs|deploy)/[\w/.-]+\.(?:py|sh|md))\b", text))
        assert paths, doc
        missing = sorted(p for p in paths if not (ROOT / p).exists())
        assert not missing, f"{doc.name} names missing files: {missing}"
        tests_dir_text = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
        for name in set(re.findall(r"\b(test_[a-z0-9_]+)\b", text)):
            is_file = any((ROOT / "tests").rglob(f"{name}.py"))
            assert f"def {name}(" in tests_dir_text or is_file, f"{doc.name} names a missing test {name}"
