"""Data loading: synthetic determinism, stratified splits, column mapping, real files in place."""

from __future__ import annotations

import numpy as np

from kss_lora.config import from_dict
from kss_lora.data import load_classification_data, make_synthetic, stratified_split


def test_synthetic_is_deterministic_and_balanced():
    a, ya, names = make_synthetic(120, num_classes=3, seed=5)
    b, yb, _ = make_synthetic(120, num_classes=3, seed=5)
    c, _, _ = make_synthetic(120, num_classes=3, seed=6)
    assert a == b and np.array_equal(ya, yb) and a != c
    assert np.bincount(ya).tolist() == [40, 40, 40] and names == ["sports", "business", "science"]


def test_stratified_split_keeps_proportions_and_is_seeded():
    labels = np.array([0] * 80 + [1] * 20)
    kept, held = stratified_split(labels, 0.1, seed=0)
    assert len(held) == 10 and np.bincount(labels[held]).tolist() == [8, 2]
    assert set(kept).isdisjoint(held) and len(kept) + len(held) == 100
    assert np.array_equal(held, stratified_split(labels, 0.1, seed=0)[1])
    assert not np.array_equal(held, stratified_split(labels, 0.1, seed=1)[1])


def test_csv_with_pairs_and_named_labels(tmp_path):
    path = tmp_path / "nli.jsonl"
    rows = [f'{{"p": "premise {i}", "h": "hyp {i}", "y": "{["yes", "no", "maybe"][i % 3]}"}}' for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    cfg = from_dict(
        {
            "data": {
                "source": "file",
                "train": str(path),
                "text_column": "p",
                "text_pair_column": "h",
                "label_column": "y",
                "val_fraction": 0.2,
            }
        }
    )
    data = load_classification_data(cfg.data)
    assert data.label_names == ["maybe", "no", "yes"] and len(data.validation) == 12 and len(data.train) == 48
    assert data.train.text_pairs is not None and data.train.text_pairs[0].startswith("hyp")
    assert data.test is None


def test_agnews_in_place(shared_data):
    cfg = from_dict(
        {
            "data": {
                "source": "file",
                "train": str(shared_data / "agnews/dev.tsv"),
                "test": str(shared_data / "agnews/test.tsv"),
                "header": False,
                "column_names": ["text", "label"],
                "max_train_examples": 400,
                "max_eval_examples": 100,
            }
        }
    )
    data = load_classification_data(cfg.data)
    assert data.label_names == ["Business", "Sci/Tech", "Sports", "World"]
    assert len(data.train) == 400 and len(data.validation) == 100 and len(data.test) == 100
    assert np.bincount(data.train.labels).min() >= 95


def test_datasets_dataset_from_disk(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"sentence": [f"text number {i}" for i in range(40)], "target": [i % 2 for i in range(40)]}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)}).save_to_disk(tmp_path / "ds")
    cfg = from_dict(
        {
            "data": {
                "source": "hf",
                "train": f"{tmp_path / 'ds'}:train",
                "test": f"{tmp_path / 'ds'}:test",
                "text_column": "sentence",
                "label_column": "target",
                "val_fraction": 0.25,
            }
        }
    )
    data = load_classification_data(cfg.data)
    assert data.label_names == ["0", "1"] and len(data.train) == 30 and len(data.validation) == 10
    assert len(data.test) == 40 and data.test.texts[3] == "text number 3"
