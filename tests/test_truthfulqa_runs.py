"""`kss eval truthfulqa --runs`: every adapter of a sweep scored on shared held-out questions, and the claim judged."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from test_claims_csv import recompute

from kss_lora.cli import main
from kss_lora.errors import DataError
from kss_lora.eval.truthfulqa_runs import SCORE_COLUMNS, questions_digest, select_runs, sweep_claim
from kss_lora.lab.verdicts import DOES_NOT_HOLD, HOLDS, NOT_SPECIFIC, TOO_FEW_RUNS

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    ("Is the sky blue?", "Yes", "Yes; It is blue", "No; It is green"),
    ("What color is grass?", "Green", "Green; It is green", "Blue; It is red"),
    ("Do fish swim?", "Yes", "Yes; They swim", "No; They fly"),
    ("Is fire cold?", "No", "No; It is hot", "Yes; It is cold"),
    ("Can cats bark?", "No", "No; Cats meow", "Yes; Cats bark"),
    ("Is water wet?", "Yes", "Yes; It is wet", "No; It is dry"),
    ("Do birds fly?", "Yes", "Yes; Most do", "No; None do"),
    ("Is ice hot?", "No", "No; It is cold", "Yes; It is hot"),
]


def write_tqa(path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"])
        for q, best, good, bad in QUESTIONS:
            w.writerow(["Adversarial", "Test", q, best, good, bad, ""])
    return path


def scores_table(values: dict[str, list[float]], base: float | None = 0.30) -> pd.DataFrame:
    rows = [
        {"arm": arm, "seed": s, "mc1": v, "mc2": v + 0.1, "mc3": v, "n_questions": 100}
        for arm, vs in values.items()
        for s, v in enumerate(vs)
    ]
    if base is not None:
        rows.append({"arm": "base", "seed": None, "mc1": base, "mc2": base + 0.1, "mc3": base, "n_questions": 100})
    return pd.DataFrame(rows).assign(questions_digest="d", run_id="r", wall_time_s=1.0)[list(SCORE_COLUMNS)]


def test_claim_holds_only_beyond_the_matched_dense_arm():
    up = {"standard": [0.30, 0.31, 0.29], "kss-highgamma": [0.40, 0.41, 0.39]}
    assert sweep_claim(scores_table(up)).verdict == HOLDS  # no control scored: the note says so
    assert "not scored" in sweep_claim(scores_table(up)).note
    same_as_dense = {**up, "dense γ=1.5": [0.40, 0.42, 0.38]}
    claim = sweep_claim(scores_table(same_as_dense))
    assert claim.verdict == NOT_SPECIFIC  # dense LoRA at γ = 1.5 does as well: the effect is γ's
    roles = [c.role for c in claim.comparisons]
    assert roles.count("claim") == 2 and roles.count("matched-γ control: KSS vs dense") == 2
    assert any(r.startswith("context:") for r in roles)
    down = {"standard": [0.40, 0.41, 0.39], "kss-highgamma": [0.30, 0.31, 0.29]}
    assert sweep_claim(scores_table(down)).verdict == DOES_NOT_HOLD
    few = {"standard": [0.30, 0.31], "kss-highgamma": [0.40, 0.41]}
    assert sweep_claim(scores_table(few)).verdict == TOO_FEW_RUNS


def test_select_runs_names_a_missing_arm():
    runs = pd.DataFrame({"condition": ["standard", "kss-highgamma"], "status": ["ok", "failed"], "seed": [0, 0]})
    with pytest.raises(DataError, match="no finished run of 'kss-highgamma'"):
        select_runs(runs, ["standard", "kss-highgamma"])
    assert questions_digest([3, 1, 2]) == questions_digest([1, 2, 3])


def test_scores_every_adapter_of_a_sweep_on_held_out_questions(tmp_path, capsys):
    tqa = write_tqa(tmp_path / "tqa.csv")
    sweep = {
        "name": "tqa",
        "base": {
            "model": {"name": "tiny-llama", "task": "causal-lm", "max_length": 48},
            "data": {
                "source": "file",
                "train": str(tqa),
                "prompt_column": "Question",
                "response_column": "Best Answer",
                "val_fraction": 0.25,
                "max_train_examples": 4,
            },
            "method": {"name": "kss", "rank": 2},
            "train": {"epochs": 1, "batch_size": 4, "progress": False, "threads": 1},
            "output": {"save_adapter": True},
        },
        "conditions": [
            {"name": "standard", "method.preset": "standard"},
            {"name": "kss-highgamma", "method.preset": "kss-highgamma"},
        ],
        "grid": {"train.seed": [0, 1, 2]},
        "executor": "sequential",
        "runs_dir": str(tmp_path / "runs"),
    }
    import yaml

    (tmp_path / "tqa.yaml").write_text(yaml.safe_dump(sweep, allow_unicode=True))
    assert main(["sweep", str(tmp_path / "tqa.yaml"), "--no-progress"]) == 0
    out = tmp_path / "res"
    args = ["eval", "truthfulqa", "--runs", str(tmp_path / "runs"), "--sweep", "tqa", "--csv", str(tqa)]
    args += ["--arms", "standard,kss-highgamma", "--out-dir", str(out)]
    assert main(args) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert scores["arm"].tolist() == ["base", *["standard"] * 3, *["kss-highgamma"] * 3]
    assert scores["n_questions"].unique().tolist() == [4]  # 8 questions, 4 trained on: the other 4
    assert scores["questions_digest"].nunique() == 1 and scores[["mc1", "mc2"]].stack().between(0, 1).all()
    assert sorted(p.name for p in (out / "per_question").iterdir())[0] == "base.csv"
    assert recompute(out / "claims.csv", out / "runs.csv") > 0  # every row recomputes from runs.csv
    # Resumable: a second call scores nothing again (the table is unchanged, wall times included).
    capsys.readouterr()
    assert main(args) == 0
    assert pd.read_csv(out / "scores.csv").equals(scores)
    assert '"arm"' not in capsys.readouterr().out
    # One line, exit 2, for a flag that makes no sense with --runs.
    assert main([*args, "--model", "tiny-llama"]) == 2
    assert "--model" in capsys.readouterr().err
    # A folder with the user's own runs.csv (no scores.csv of ours) is refused, and the file is left as it was.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "runs.csv").write_text("mine\n")
    assert main([*args[:-1], str(theirs)]) == 2
    assert "--out-dir" in capsys.readouterr().err and (theirs / "runs.csv").read_text() == "mine\n"
