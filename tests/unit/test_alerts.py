"""deploy/prometheus/inspector-alerts.yml: every rule is well formed PromQL over metrics the worker
really exports, so a renamed metric cannot leave an alert that never fires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
promql_parser = pytest.importorskip("promql_parser")

from inspector.runtime.observability import Metrics  # noqa: E402

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "inspector-alerts.yml"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", "")}


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def exported_series() -> set[str]:
    return {family.name + suffix for family in Metrics().registry.collect() for suffix in SUFFIXES[family.type]}


def selectors(expr) -> set[str]:
    """Metric names of every vector selector in a parsed expression."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)

    visit(expr)
    return names


def test_the_rule_file_has_alerts_with_unique_names_severities_and_summaries():
    found = rules()
    assert len(found) >= 8
    names = [r["alert"] for r in found]
    assert len(names) == len(set(names))
    for r in found:
        assert r["labels"]["severity"] in {"info", "warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert re.fullmatch(r"\d+[smh]", r.get("for", "0s")), r["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_each_expression_parses_and_names_only_exported_metrics(rule):
    expr = promql_parser.parse(rule["expr"])
    used = selectors(expr)
    assert used, f"{rule['alert']}: no metric in {rule['expr']!r}"
    unknown = used - exported_series()
    assert not unknown, f"{rule['alert']} uses metrics the worker does not export: {sorted(unknown)}"


def test_the_checks_catch_a_misnamed_metric_and_broken_promql():
    assert "inspector_frames_total" in exported_series() and "inspector_frames" not in exported_series()
    assert selectors(promql_parser.parse("sum(rate(inspector_frames[5m])) > 0")) - exported_series() == {
        "inspector_frames"}
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(inspector_frames_total[5m]) > 0")
