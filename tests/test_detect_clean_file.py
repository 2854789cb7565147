"""Clean-and-retrain as a user's tool: `kss detect CONFIG --write-clean OUT` on a user's own noisy CSV writes the
ranked issues table and a cleaned file that `kss run` takes as it is; the cleaned file keeps the input's format."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.data import load_classification_data
from kss_lora.data.synthetic import make_synthetic
from kss_lora.detect.clean_file import check_clean_target, write_clean_file
from kss_lora.errors import ConfigError

N_TRAIN, NOISE_RATE = 200, 0.2


def write_user_files(tmp: Path) -> tuple[Path, np.ndarray]:
    """A user's 2-class CSV with 20% of its training labels flipped (seeded), a clean validation CSV and a
    config; returns the config path and the flipped row positions."""
    texts, labels, names = make_synthetic(N_TRAIN + 100, num_classes=2, ambiguity=0.0, seed=3)
    given = labels.copy()
    flipped = np.sort(np.random.default_rng(1).permutation(N_TRAIN)[: int(NOISE_RATE * N_TRAIN)])
    given[flipped] = 1 - given[flipped]
    pd.DataFrame({"text": texts[:N_TRAIN], "label": [names[y] for y in given[:N_TRAIN]]}).to_csv(
        tmp / "train.csv", index=False
    )
    pd.DataFrame({"text": texts[N_TRAIN:], "label": [names[y] for y in labels[N_TRAIN:]]}).to_csv(
        tmp / "val.csv", index=False
    )
    cfg = {
        "model": {"name": "tiny-bert", "max_length": 16},
        "data": {"source": "file", "train": "train.csv", "validation": "val.csv"},
        "method": {"name": "lora", "rank": 8},
        "train": {"seed": 0, "epochs": 6, "batch_size": 16, "lr": 3e-2, "progress": False, "threads": 1},
        "output": {"dir": str(tmp / "runs"), "save_adapter": False},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "cfg.yaml", flipped


def test_detect_writes_issues_and_a_cleaned_file_that_kss_run_takes(tmp_path, capsys, one_thread):
    cfg, flipped = write_user_files(tmp_path)
    out, clean = tmp_path / "out", tmp_path / "clean.csv"
    args = ["detect", str(cfg), "--detectors", "confident-learning", "--folds", "2", "-o", str(out)]
    assert main([*args, "--write-clean", str(clean)]) == 0, capsys.readouterr().err

    issues = pd.read_csv(out / "label_issues.csv")
    assert len(issues) == N_TRAIN and issues["score"].is_monotonic_decreasing
    assert sorted(issues["row"]) == list(range(1, N_TRAIN + 1))  # data rows of train.csv, from 1
    original = pd.read_csv(tmp_path / "train.csv")
    assert (issues["given_label"].to_numpy() == original["label"].to_numpy()[issues["row"] - 1]).all()
    flagged_rows = issues.loc[issues["flagged"], "row"].to_numpy()
    # Measured 0.58 (15 of 26 flagged rows were flipped; 2-fold cross-fitted cleanlab on tiny-bert). A random
    # flagger's expected precision is the noise rate, 0.20; P(>= 12 of 26 | 0.2) < 0.003. 0.45 leaves room for
    # the run-to-run variation of CPU kernels while staying far above chance.
    precision = np.isin(flagged_rows - 1, flipped).mean()
    assert len(flagged_rows) >= 15 and precision >= 0.45, (len(flagged_rows), precision)

    cleaned = pd.read_csv(clean)
    assert list(cleaned.columns) == ["text", "label"] and len(cleaned) == N_TRAIN - len(flagged_rows)
    kept = original.drop(index=flagged_rows - 1).reset_index(drop=True)
    pd.testing.assert_frame_equal(cleaned, kept)  # the other rows as they were, in order
    assert json.loads((out / "summary.json").read_text())["clean_file"]["rows_out"] == len(cleaned)
    assert f"dropped {len(flagged_rows)} flagged rows" in capsys.readouterr().out

    # Not replaced without --overwrite; `kss run` reads the cleaned file as it is.
    assert main([*args, "--write-clean", str(clean)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["run", str(cfg), f"data.train={clean}", "train.epochs=1", "train.class_weights=balanced"]) == 0
    results = list((tmp_path / "runs").rglob("result.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["n_train"] == len(cleaned)


def _result(ids, flags, suggested, names=("neg", "pos")):
    """The fields of a DetectionResult that write_clean_file reads."""
    return SimpleNamespace(
        ids=np.asarray(ids),
        flags={"small-loss": np.asarray(flags, dtype=bool)},
        primary="small-loss",
        label_names=list(names),
        suggested_labels=np.asarray(suggested),
    )


def _cfg(tmp_path: Path, train: str, **data) -> object:
    return from_dict(
        {"model": {"name": "tiny-bert"}, "data": {"source": "file", "train": str(tmp_path / train), **data}}
    )


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json"])
def test_relabel_and_drop_keep_the_input_format(tmp_path, fmt):
    rows = [{"text": f'say "{i}", ok', "label": lab, "extra": i} for i, lab in enumerate([0, 1, 0, 1, 0])]
    df = pd.DataFrame(rows)
    path = tmp_path / f"train.{fmt}"
    if fmt in ("csv", "tsv"):
        df.to_csv(path, sep="," if fmt == "csv" else "\t", index=False, quoting=3 if fmt == "tsv" else 0)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        path.write_text(json.dumps(rows))
    cfg = _cfg(tmp_path, path.name)
    # Training rows 0, 2, 3 were scored (1 and 4 e.g. held out for validation); rows 2 and 3 flagged.
    result = _result([0, 2, 3], [False, True, True], [0, 1, 1], names=("0", "1"))
    out = check_clean_target(cfg, tmp_path / f"relabel.{fmt}", action="relabel", overwrite=False)
    info = write_clean_file(cfg, result, out, action="relabel")
    assert (info.rows_in, info.rows_out, info.flagged_rows, info.relabelled) == (5, 5, [3, 4], 1)
    data = load_classification_data(_cfg(tmp_path, out.name, validation=str(out)).data)
    assert data.train.labels.tolist() == [0, 1, 1, 1, 0] and data.train.texts == [r["text"] for r in rows]
    if fmt == "json":
        assert out.read_text().lstrip().startswith("[")
        assert json.loads(out.read_text())[2] == {"text": 'say "2", ok', "label": 1, "extra": 2}  # ints stay ints
    dropped = write_clean_file(cfg, result, tmp_path / f"drop.{fmt}", action="drop")
    assert dropped.rows_out == 3
    kept = load_classification_data(_cfg(tmp_path, f"drop.{fmt}", validation=str(out)).data).train.texts
    assert kept == [rows[i]["text"] for i in (0, 1, 4)]


def test_headerless_csv_stays_headerless(tmp_path):
    (tmp_path / "train.csv").write_text("good movie,pos\nbad movie,neg\nfine movie,pos\n")
    cfg = _cfg(tmp_path, "train.csv", header=False, column_names=["text", "label"])
    write_clean_file(cfg, _result([0, 1, 2], [False, True, False], [1, 1, 1]), tmp_path / "c.csv", action="relabel")
    assert (tmp_path / "c.csv").read_text() == "good movie,pos\nbad movie,pos\nfine movie,pos\n"


@pytest.mark.parametrize(
    "target, over, message",
    [
        ("folder", {}, "is a directory"),
        ("exists.csv", {}, "exists; pass --overwrite"),
        ("train.csv", {"overwrite": True}, "is the training file itself"),
        ("new.csv", {"action": "fix"}, "--clean-action: unknown 'fix'"),
    ],
)
def test_bad_clean_targets_are_refused_before_anything_is_written(tmp_path, target, over, message):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "exists.csv").write_text("mine\n")
    cfg = _cfg(tmp_path, "train.csv")
    kwargs = {"action": "drop", "overwrite": False, **over}
    with pytest.raises(ConfigError, match=message):
        check_clean_target(cfg, tmp_path / target, **kwargs)
    assert (tmp_path / "exists.csv").read_text() == "mine\n" and (tmp_path / "train.csv").read_text().startswith("text")


def test_kss_detect_refuses_a_bad_target_with_one_line_and_trains_nothing(tmp_path, capsys):
    cfg, _ = write_user_files(tmp_path)
    (tmp_path / "folder").mkdir()
    out = tmp_path / "out"
    for extra, message in (
        (["--write-clean", str(tmp_path / "folder")], "--write-clean:"),
        (["--write-clean", str(tmp_path / "c.csv"), "noise.rate=0.2"], "injects label noise"),
        (["--write-clean", str(tmp_path / "c.csv"), "data.source=synthetic"], "data.source: file"),
    ):
        assert main(["detect", str(cfg), "-o", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists() and not (tmp_path / "c.csv").exists()
