"""Annotation entropy (nats), buckets, and the ChaosNLI loader on the real files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kss_lora.dynamics import annotation_entropy, entropy_bucket, load_chaosnli
from kss_lora.errors import DataError

CHAOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chaosnli"
needs_data = pytest.mark.skipif(
    not CHAOS.is_dir(),
    reason="../shared/data/chaosnli is absent (real data sits beside the project checkout)",
)


def test_annotation_entropy_hand_values():
    # -(.3 ln .3 + .7 ln .7); ChaosNLI stores the same item as 0.8812908992306927 (bits)
    assert annotation_entropy([30, 70, 0]) == pytest.approx(0.6108643020548935)
    assert annotation_entropy([30, 70, 0]) / math.log(2) == pytest.approx(0.8812908992306927)
    assert annotation_entropy([1, 1, 1]) == pytest.approx(math.log(3))
    assert annotation_entropy([100, 0, 0]) == 0.0
    np.testing.assert_allclose(annotation_entropy([[50, 50], [100, 0]]), [math.log(2), 0.0])
    with pytest.raises(DataError):
        annotation_entropy([0, 0, 0])
    with pytest.raises(DataError):
        annotation_entropy([5, -1, 3])


def test_entropy_bucket_boundaries():
    assert entropy_bucket(0.0) == "clean"
    assert entropy_bucket(0.3999) == "clean"
    assert entropy_bucket(0.4) == "ambiguous"
    assert entropy_bucket(0.6999) == "ambiguous"
    assert entropy_bucket(0.7) == "contested"
    assert list(entropy_bucket(np.array([0.1, 0.5, 1.0]))) == ["clean", "ambiguous", "contested"]
    with pytest.raises(DataError):
        entropy_bucket(float("nan"))


@needs_data
def test_snli_entropy_matches_file_field_in_bits():
    df = load_chaosnli(CHAOS / "chaosNLI_snli.jsonl")
    assert len(df) == 1514
    assert df.attrs["entropy_file_unit"] == "bits"
    np.testing.assert_allclose(df["entropy_nats"] / math.log(2), df["entropy_file"], atol=1e-9)
    first = df.iloc[0]
    assert first["uid"] == "2407214681.jpg#0r1n"
    assert first["label_count"] == [30, 70, 0]
    assert first["majority_label"] == 1  # 'n' with order e=0, n=1, c=2
    assert first["entropy_nats"] == pytest.approx(0.6108643020548935)
    assert first["bucket"] == "ambiguous"  # in bits (0.88) it would wrongly be 'contested'
    counts = np.array(df["label_count"].tolist())
    assert np.all(counts.sum(axis=1) == 100)
    top = counts[np.arange(len(df)), df["majority_label"].to_numpy()]
    assert np.all(top == counts.max(axis=1))  # majority is an argmax (ties flagged, file's pick kept)
    assert df["majority_tied"].sum() == 14
    # SOURCES.md: the 100-vote majority disagrees with the original gold label on about 25% of SNLI items
    disagree = 1 - df["majority_matches_old"].mean()
    assert 0.2 < disagree < 0.3
    assert set(df["bucket"]) == {"clean", "ambiguous", "contested"}


@needs_data
def test_mnli_and_alphanli_load():
    mnli = load_chaosnli(CHAOS / "chaosNLI_mnli_m.jsonl")
    assert len(mnli) == 1599 and mnli.attrs["task"] == "nli"
    anli = load_chaosnli(CHAOS / "chaosNLI_alphanli.jsonl")
    assert len(anli) == 1532 and anli.attrs["label_names"] == ["1", "2"]
    assert set(anli["majority_label"]) == {0, 1}
    assert {"obs1", "obs2", "hyp1", "hyp2"} <= set(anli.columns)
    np.testing.assert_allclose(anli["entropy_nats"] / math.log(2), anli["entropy_file"], atol=1e-9)
    assert anli["entropy_nats"].max() <= math.log(2) + 1e-12


def test_loader_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_chaosnli(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    good = (
        '{"uid": "a", "majority_label": "e", "label_count": [60, 40, 0], "entropy": 0.97,'
        ' "example": {"premise": "p", "hypothesis": "h", "source": "s"}, "old_label": "e"}\n'
    )
    bad.write_text(good + "{not json\n")
    with pytest.raises(DataError, match="line 2"):
        load_chaosnli(bad)
    bad.write_text(good.replace('"majority_label": "e"', '"majority_label": "x"'))
    with pytest.raises(DataError, match="majority_label"):
        load_chaosnli(bad)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(good)
    df = load_chaosnli(ok)
    assert df.loc[0, "majority_label"] == 0 and df.loc[0, "old_labels"] == []
