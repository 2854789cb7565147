"""Data formats and paths (issue 16 item 5) and label checks (issue 12 item 8): values, error texts, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kss_lora.cli import main
from kss_lora.config import from_dict, load_config, shipped_configs
from kss_lora.data import load_classification_data
from kss_lora.data.files import resolved_data_paths
from kss_lora.data.instructions import load_instruction_data, random_split
from kss_lora.errors import ConfigError, DataError

ALPACA = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
]


def data_cfg(**data):
    return from_dict({"data": {"source": "file", **data}}).data


def lm_cfg(**data):
    return from_dict({"model": {"task": "causal-lm"}, "data": {"source": "file", **data}}).data


def classification_rows(n_per_class: int, labels=("neg", "pos")) -> pd.DataFrame:
    rows = [(f"text {c} {i}", c) for c in labels for i in range(n_per_class)]
    return pd.DataFrame(rows, columns=["text", "label"])


# ----------------------------------------------------------------------------- formats


def test_parquet_for_classification_and_causal_lm(tmp_path):
    path = tmp_path / "train.parquet"
    df = classification_rows(10, labels=("a", "b", "c"))
    df["label"] = df["label"].map({"a": 0, "b": 1, "c": 2})  # parquet keeps integers as integers
    df.to_parquet(path)
    data = load_classification_data(data_cfg(train=str(path), val_fraction=0.2))
    assert data.label_names == ["0", "1", "2"]
    assert np.bincount(data.train.labels).tolist() == [8, 8, 8] and np.bincount(data.validation.labels).tolist() == [
        2,
        2,
        2,
    ]
    assert sorted(data.train.texts + data.validation.texts) == sorted(df["text"])

    lm_path = tmp_path / "qa.parquet"
    pd.DataFrame({"prompt": ["q1", "q2", "q3", "q4"], "response": ["a1", "a2", "a3", "a4"]}).to_parquet(lm_path)
    lm = load_instruction_data(lm_cfg(train=str(lm_path), validation=str(lm_path)))
    assert lm.train.conversations[1] == [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]


def test_format_parquet_given_explicitly_and_unknown_suffix(tmp_path):
    path = tmp_path / "train.data"
    classification_rows(5).to_parquet(path)
    data = load_classification_data(data_cfg(train=str(path), format="parquet", val_fraction=0.2))
    assert data.label_names == ["neg", "pos"] and len(data.train) + len(data.validation) == 10
    with pytest.raises(ConfigError, match=r"data.format: cannot infer from the suffix of 'train.data'.*\.parquet"):
        load_classification_data(data_cfg(train=str(path)))
    with pytest.raises(ConfigError, match="data.format: unknown value 'xml'; allowed: csv, tsv, jsonl, json, parquet"):
        data_cfg(train=str(path), format="xml")


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_alpaca_rows_for_causal_lm_without_column_mapping(tmp_path, fmt):
    path = tmp_path / f"alpaca.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(ALPACA, indent=2))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    data = load_instruction_data(lm_cfg(train=str(path), validation=str(path), system_prompt="Be brief."))
    prompts = [c[1]["content"] for c in data.train.conversations]
    assert prompts == ["Name a colour.", "Translate to French.\n\ncat", "Add the numbers.\n\n2 and 3", "Say hello."]
    assert data.train.responses == ["Blue.", "chat", "5", "Hello!"]
    assert data.train.conversations[0][0] == {"role": "system", "content": "Be brief."}


def test_alpaca_without_input_column_and_explicit_mapping_wins(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": f"do {i}", "output": f"done {i}"} for i in range(3)]))
    data = load_instruction_data(lm_cfg(train=str(path), validation=str(path)))
    assert [c[0]["content"] for c in data.train.conversations] == ["do 0", "do 1", "do 2"]
    assert data.train.responses == ["done 0", "done 1", "done 2"]
    # A mapping given by the user is used as given (the instruction alone, the output as response).
    data = load_instruction_data(
        lm_cfg(train=str(path), validation=str(path), prompt_column="output", response_column="instruction")
    )
    assert data.train.conversations[2] == [
        {"role": "user", "content": "done 2"},
        {"role": "assistant", "content": "do 2"},
    ]


def test_json_file_of_json_lines_still_reads_and_a_bad_array_is_one_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": ["x", "y"][i % 2]}) + "\n" for i in range(20)))
    data = load_classification_data(data_cfg(train=str(path), val_fraction=0.2))
    assert data.label_names == ["x", "y"] and len(data.validation) == 4
    path.write_text(json.dumps([{"text": "a", "label": "x"}, "oops"]))
    with pytest.raises(DataError, match=r"^data.train: cannot read .*rows.json as json: item 1 of the array is a str"):
        load_classification_data(data_cfg(train=str(path)))


# ----------------------------------------------------------------------------- datasets: splits and configs


def saved_dataset(tmp_path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    def rows(tag: str, n: int) -> dict:
        return {"sentence": [f"{tag} {i}" for i in range(n)], "target": [i % 2 for i in range(n)]}

    path = tmp_path / "ds"
    DatasetDict(
        {"train": Dataset.from_dict(rows("tr", 40)), "validation": Dataset.from_dict(rows("va", 10))}
    ).save_to_disk(path)
    return path


def hf_cfg(**data):
    return from_dict({"data": {"source": "hf", "text_column": "sentence", "label_column": "target", **data}}).data


def test_datasets_split_defaults_to_the_role_and_missing_split_is_named(tmp_path):
    path = saved_dataset(tmp_path)
    data = load_classification_data(hf_cfg(train=str(path), validation=str(path)))
    assert len(data.train) == 40 and len(data.validation) == 10 and data.validation.texts[0] == "va 0"
    with pytest.raises(DataError, match=r"^data.test: .*ds has no split 'test'; splits: train, validation$"):
        load_classification_data(hf_cfg(train=str(path), validation=str(path), test=str(path)))
    data = load_classification_data(hf_cfg(train=f"{path}:validation", validation=f"{path}:validation"))
    assert len(data.train) == 10  # the split named after ':' wins over the role's default
    with pytest.raises(ConfigError, match="data.hf_config: .* was saved with save_to_disk and has no configs"):
        load_classification_data(hf_cfg(train=str(path), hf_config="sst2"))


def test_hf_config_names_a_config_of_a_dataset_folder(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    root = tmp_path / "glue"
    for config, n in (("sst2", 12), ("cola", 6)):
        (root / config).mkdir(parents=True)
        for split in ("train", "validation"):
            frame = pd.DataFrame({"sentence": [f"{config} {split} {i}" for i in range(n)], "target": [0, 1] * (n // 2)})
            frame.to_parquet(root / config / f"{split}.parquet")
    configs = "".join(
        f"- config_name: {c}\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: {c}/{s}.parquet\n" for s in ("train", "validation"))
        for c in ("sst2", "cola")
    )
    (root / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    data = load_classification_data(hf_cfg(train=str(root), validation=str(root), hf_config="cola"))
    assert len(data.train) == 6 and data.validation.texts[0] == "cola validation 0"
    with pytest.raises(DataError, match=r"^data.train: cannot load dataset .*\(config 'nope'\), split 'train': .*"):
        load_classification_data(hf_cfg(train=str(root), validation=str(root), hf_config="nope"))


def test_unreachable_dataset_name_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        load_classification_data(hf_cfg(train="glue", hf_config="sst2"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data.train: cannot load dataset 'glue' (config 'sst2'), split 'train': no folder 'glue'")
    assert f"(relative to {tmp_path}, the working directory)" in message and "Hub" in message
    with pytest.raises(ConfigError, match="data.hf_config: only used with data.source=hf, not 'file'"):
        data_cfg(train="x.csv", hf_config="sst2")

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"source": "hf", "train": "glue"}, "output": {"dir": str(tmp_path / "r")}}))
    assert main(["run", str(cfg)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- relative paths


def write_project(tmp_path: Path) -> Path:
    """A config in proj/configs/ naming proj/configs/data/train.csv by a path relative to the config."""
    folder = tmp_path / "proj" / "configs"
    (folder / "data").mkdir(parents=True)
    classification_rows(10).to_csv(folder / "data" / "train.csv", index=False)
    cfg = {"data": {"source": "file", "train": "data/train.csv"}, "output": {"dir": str(tmp_path / "runs")}}
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "cfg.yaml"


def test_relative_paths_are_read_against_the_config_files_folder(tmp_path, monkeypatch):
    config = write_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(str(config))
    assert cfg.data.train == "data/train.csv"  # kept as written
    data = load_classification_data(cfg.data)
    assert len(data.train) + len(data.validation) == 20 and data.label_names == ["neg", "pos"]
    # The run id does not depend on where the config is run from, nor on how the config file is named.
    monkeypatch.chdir(config.parent)
    assert load_config("cfg.yaml").run_id() == cfg.run_id() == from_dict(yaml.safe_load(config.read_text())).run_id()
    assert "path_bases" not in cfg.to_dict()["data"]
    # For a run record: the files read, as absolute paths.
    train = str((config.parent / "data" / "train.csv").resolve())
    assert resolved_data_paths(cfg.data, "held.csv") == {
        "data.train": train,
        "tracking.heldout": str((config.parent / "held.csv").resolve()),
    }


def test_missing_file_says_what_the_path_was_relative_to(tmp_path, monkeypatch, capsys):
    config = write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(config), ["data.test=x.csv"])
    with pytest.raises(DataError) as err:
        load_classification_data(cfg.data)
    assert str(err.value) == f"data.test: no such file 'x.csv' (relative to {tmp_path}, the working directory)"

    (config.parent / "data" / "train.csv").unlink()
    assert main(["run", str(config)]) == 2
    folder = config.parent.resolve()
    expected = f"error: data.train: no such file 'data/train.csv' (relative to {folder}, the config file's folder)\n"
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "runs").exists()

    # An override of the path is read against the working directory, the other paths still against the file's.
    (tmp_path / "mine.csv").write_text(classification_rows(10).to_csv(index=False))
    cfg = load_config(str(config), ["data.train=mine.csv"])
    assert len(load_classification_data(cfg.data).train) == 18
    assert "data.train" not in cfg.data.path_bases and cfg.data.path_bases["data.test"] == folder
    with pytest.raises(DataError) as err:
        load_classification_data(load_config(str(config), ["data.train=."]).data)
    assert str(err.value) == f"data.train: '.' (relative to {tmp_path}, the working directory) is a folder, not a file"


def test_shipped_config_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        load_classification_data(load_config("agnews").data)
    relative = f"(relative to {tmp_path}, the working directory)"
    assert str(err.value) == f"data.train: no such file '../shared/data/agnews/dev.tsv' {relative}"
    # Also when the shipped file is named by its path (the repository's configs/ links to the package's).
    by_path = load_config(str(shipped_configs()["agnews"]))
    assert by_path.data.path_bases == {} and by_path.run_id() == load_config("agnews").run_id()


# ----------------------------------------------------------------------------- labels


def test_integer_labels_are_the_values_seen_unless_label_names_say_otherwise(tmp_path):
    path = tmp_path / "ints.csv"
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(40)], "label": [[0, 7][i % 2] for i in range(40)]})
    frame.to_csv(path, index=False)
    data = load_classification_data(data_cfg(train=str(path)))
    assert data.label_names == ["0", "7"] and data.num_labels == 2
    assert np.bincount(data.train.labels).tolist() == [18, 18]
    names = [str(i) for i in range(8)]
    data = load_classification_data(data_cfg(train=str(path), label_names=names))
    assert data.num_labels == 8 and set(data.train.labels.tolist()) == {0, 7}
    # Integers sort numerically (10 after 9), not as strings.
    frame["label"] = [[9, 10, 2][i % 3] for i in range(40)]
    frame.to_csv(path, index=False)
    assert load_classification_data(data_cfg(train=str(path))).label_names == ["2", "9", "10"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_blank_label_is_an_error_with_its_row(tmp_path, fmt, capsys):
    frame = classification_rows(6)
    frame.loc[4, "label"] = "  " if fmt == "csv" else None
    frame.loc[9, "label"] = ""
    path = tmp_path / f"train.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_json(path, orient="records", lines=True)
    expected = (
        f"data.train: blank label (column 'label') in row 5 of {path} (data rows counted from 1, a header row not "
        "counted); 2 blank labels in all"
    )
    with pytest.raises(DataError) as err:
        load_classification_data(data_cfg(train=str(path)))
    assert str(err.value) == expected
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "file", "train": path.name}, "output": {"dir": "runs"}}))
    assert main(["run", str(config)]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n" and not (tmp_path / "runs").exists()


def test_header_row_read_as_data_warns_once(tmp_path, capsys):
    path = tmp_path / "with_header.tsv"
    path.write_text("text\tlabel\n" + "".join(f"row {i}\t{['a', 'b'][i % 2]}\n" for i in range(20)))
    cfg = data_cfg(train=str(path), header=False, column_names=["text", "label"])
    data = load_classification_data(cfg)
    load_classification_data(cfg)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert err == (
        f"warning: data.train: the first row of {path} looks like a header (label cell 'label') but data.header "
        "is false, so it is read as an example; set data.header: true if it is one\n"
    )
    assert data.label_names == ["a", "b", "label"]  # kept as data, as asked; the warning says so

    # A header with other names: its label cell is unlike the integer labels below it.
    other = tmp_path / "other.csv"
    other.write_text("sentence,category\n" + "".join(f"row {i},{i % 2}\n" for i in range(20)))
    load_classification_data(data_cfg(train=str(other), header=False, column_names=["text", "label"]))
    assert "label cell 'category'" in capsys.readouterr().err

    # No header: no warning.
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"row {i},{['a', 'b'][i % 2]}\n" for i in range(20)))
    load_classification_data(data_cfg(train=str(plain), header=False, column_names=["text", "label"]))
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- too small to split


def test_training_file_too_small_to_split(tmp_path, capsys):
    path = tmp_path / "tiny.csv"
    classification_rows(2, labels=("a", "b", "c"))[:5].to_csv(path, index=False)
    expected = (
        "data.train: 5 examples for 3 classes; splitting off a validation set needs at least 6 (two per class), "
        "or give data.validation"
    )
    with pytest.raises(DataError) as err:
        load_classification_data(data_cfg(train=str(path)))
    assert str(err.value) == expected
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "file", "train": "tiny.csv"}, "output": {"dir": "runs"}}))
    assert main(["run", str(config)]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n" and not (tmp_path / "runs").exists()

    # Two per class for ten classes: 10% of each class rounds to nothing.
    classification_rows(2, labels=tuple("abcdefghij")).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_classification_data(data_cfg(train=str(path)))
    assert str(err.value).startswith(
        "data.train: data.val_fraction=0.1 of 20 examples leaves the validation split empty"
    )
    data = load_classification_data(data_cfg(train=str(path), val_fraction=0.5))
    assert len(data.train) == 10 and len(data.validation) == 10


def test_instruction_split_that_leaves_no_training_examples():
    from kss_lora.data.instructions import InstructionSplit

    split = InstructionSplit([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]] * 2)
    with pytest.raises(DataError, match="^data.train: data.val_fraction=0.9 of 2 examples leaves no training"):
        random_split(split, 0.9, seed=0)
    kept, held = random_split(split, 0.5, seed=0)
    assert len(kept) == 1 and len(held) == 1
