"""Reason codes are one enumeration each, and what the service uses is derived from them."""

from __future__ import annotations

from inspector.contracts.reasons import DECODE_REASONS, RefusalReason, RejectReason
from inspector.model.checkpoint import REFUSAL_REASONS, CheckpointError, refusal_reason


def test_refusal_reasons_are_the_enumerations_values():
    assert REFUSAL_REASONS == {r.value for r in RefusalReason}
    assert all(type(r) is str for r in REFUSAL_REASONS)  # metric labels stay plain strings
    assert refusal_reason(CheckpointError("old", reason="rollback")) == "rollback"


def test_decode_reasons_are_reject_reasons():
    assert DECODE_REASONS < set(RejectReason)
    assert RejectReason.UNKNOWN_MODEL not in DECODE_REASONS


def test_contracts_doc_has_a_row_for_every_code():
    import re
    from pathlib import Path

    from inspector.contracts.reasons import GateReason

    text = (Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M))
    codes = {r.value for enum in (RejectReason, RefusalReason, GateReason) for r in enum}
    assert documented == codes, "docs/CONTRACTS.md: Reason codes tables and inspector/contracts/reasons.py differ"
