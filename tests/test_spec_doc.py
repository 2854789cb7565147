"""docs/spec.md ships the working definitions; it must match the team's copy beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPEC = ROOT.parent / "shared" / "SPEC.md"


def test_spec_doc_is_shipped():
    text = (ROOT / "docs" / "spec.md").read_text()
    assert "## 5. Verdicts" in text and "Steele's protocol" in text


@pytest.mark.skipif(not SHARED_SPEC.is_file(), reason="no ../shared/SPEC.md beside this checkout")
def test_spec_doc_in_sync_with_shared_copy():
    assert (ROOT / "docs" / "spec.md").read_text() == SHARED_SPEC.read_text(), (
        "docs/spec.md differs from ../shared/SPEC.md: copy it over (cp ../shared/SPEC.md docs/spec.md)"
    )
