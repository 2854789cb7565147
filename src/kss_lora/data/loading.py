"""Text-classification data: files, ``datasets`` datasets or synthetic, split and mapped.

Everything downstream sees :class:`ClassificationData`: three :class:`Split`\\ s with integer labels and
a shared ``label_names`` list. Splits and subsamples are seeded by ``data.split_seed`` (not the training
seed), so all seeds of a sweep see the same examples. Reading files and datasets is :mod:`.files`.

Labels are the values seen in the training data (integers sorted numerically: labels {0, 7} are two
classes, not eight) unless ``data.label_names`` lists them; a blank label is an error naming its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .files import read_table, resolve_path
from .synthetic import make_synthetic


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray
    text_pairs: list[str] | None = None
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    # Each row's ``kss_role`` (study files of ``kss entropy-data``: bulk / tracked), None when the file has none.
    roles: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.ids is None:
            self.ids = np.arange(len(self.texts))

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> Split:
        pairs = [self.text_pairs[i] for i in index] if self.text_pairs is not None else None
        roles = None if self.roles is None else self.roles[index]
        return Split([self.texts[i] for i in index], self.labels[index], pairs, self.ids[index], roles)

    def with_labels(self, labels: np.ndarray) -> Split:
        return replace(self, labels=np.asarray(labels, dtype=np.int64))


@dataclass
class ClassificationData:
    train: Split
    validation: Split
    test: Split | None
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def load_classification_data(cfg: DataConfig) -> ClassificationData:
    if cfg.source == "synthetic":
        return _synthetic(cfg)
    if cfg.source == "chaosnli":
        return _chaosnli(cfg)
    train_df = read_table(cfg, cfg.train, "data.train")
    val_df = read_table(cfg, cfg.validation, "data.validation") if cfg.validation else None
    test_df = read_table(cfg, cfg.test, "data.test") if cfg.test else None

    for df, where in ((train_df, "data.train"), (val_df, "data.validation"), (test_df, "data.test")):
        if df is not None:
            _check_columns(df, cfg, where)
            _check_blank_labels(df, cfg.label_column, where)
    label_names = cfg.label_names or _infer_label_names(train_df[cfg.label_column])
    if len(label_names) < 2:
        raise ConfigError("data.label_column", f"needs at least two classes, found {len(label_names)}: {label_names}")
    train = _to_split(train_df, cfg, label_names, "data.train")
    if val_df is None:
        train, validation = split_off_validation(train, len(label_names), cfg)
    else:
        validation = _to_split(val_df, cfg, label_names, "data.validation")
    test = _to_split(test_df, cfg, label_names, "data.test") if test_df is not None else None

    return _limit(ClassificationData(train, validation, test, list(label_names)), cfg)


def _limit(data: ClassificationData, cfg: DataConfig) -> ClassificationData:
    """Apply max_train_examples / max_eval_examples (stratified, seeded by data.split_seed)."""
    if cfg.max_train_examples:
        data.train = _cap(data.train, cfg.max_train_examples, cfg.split_seed)
    if cfg.max_eval_examples:
        data.validation = _cap(data.validation, cfg.max_eval_examples, cfg.split_seed)
        data.test = _cap(data.test, cfg.max_eval_examples, cfg.split_seed + 1) if data.test is not None else None
    return data


def split_off_validation(pool: Split, num_classes: int, cfg: DataConfig) -> tuple[Split, Split]:
    """Stratified (train, validation) split of the training pool; a pool too small to split is an error
    naming data.train and what is needed, never an empty validation set."""
    n, needed = len(pool), 2 * num_classes
    if n < needed:
        raise DataError(
            f"data.train: {n} examples for {num_classes} classes; splitting off a validation set needs at least "
            f"{needed} (two per class), or give data.validation"
        )
    train_idx, val_idx = stratified_split(pool.labels, cfg.val_fraction, seed=cfg.split_seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        empty = "validation" if len(val_idx) == 0 else "training"
        raise DataError(
            f"data.train: data.val_fraction={cfg.val_fraction:g} of {n} examples leaves the {empty} split empty "
            f"(each class gives round(val_fraction x its count)); change data.val_fraction or give data.validation"
        )
    return pool.subset(train_idx), pool.subset(val_idx)


def load_split(cfg: DataConfig, path: str, label_names: list[str], *, where: str) -> Split:
    """One whole file read with the same settings as the training data (e.g. held-out items to track)."""
    if cfg.source == "chaosnli":
        return _chaosnli_split(cfg, path, where)
    df = read_table(cfg, path, where)
    _check_columns(df, cfg, where)
    _check_blank_labels(df, cfg.label_column, where)
    return _to_split(df, cfg, label_names, where)


CHAOSNLI_LABELS = ["entailment", "neutral", "contradiction"]


def _chaosnli_split(cfg: DataConfig, value: str, where: str) -> Split:
    """ChaosNLI items with the 100-vote majority label (order e, n, c); ids are row numbers in the file."""
    from ..dynamics.entropy import load_chaosnli

    path, relative = resolve_path(cfg, value, where)
    if not path.is_file():
        raise DataError(f"{where}: no such file {value!r}{relative}")
    df = load_chaosnli(path)
    if df.attrs.get("task") not in (None, "nli"):
        raise DataError(f"{where}: only SNLI/MNLI ChaosNLI files are supported for training, got {path}")
    roles = df["role"].to_numpy(dtype=object) if (df["role"] != "").any() else None
    return Split(df["premise"].tolist(), df["majority_label"].to_numpy(), df["hypothesis"].tolist(), roles=roles)


def _chaosnli(cfg: DataConfig) -> ClassificationData:
    """Train on one ChaosNLI subset's majority labels (Steele's protocol adapted to the data we have)."""
    pool = _chaosnli_split(cfg, cfg.train, "data.train")  # type: ignore[arg-type]
    if cfg.validation:
        train, validation = pool, _chaosnli_split(cfg, cfg.validation, "data.validation")
    else:
        train, validation = split_off_validation(pool, len(CHAOSNLI_LABELS), cfg)
    test = _chaosnli_split(cfg, cfg.test, "data.test") if cfg.test else None
    return _limit(ClassificationData(train, validation, test, list(CHAOSNLI_LABELS)), cfg)


def _synthetic(cfg: DataConfig) -> ClassificationData:
    def make(n: int, seed: int) -> tuple[Split, list[str]]:
        texts, labels, names = make_synthetic(
            n, num_classes=cfg.num_classes, ambiguity=cfg.synthetic_ambiguity, seed=seed
        )
        return Split(texts, labels), names

    n_eval = max(cfg.num_classes * 10, cfg.num_examples // 4)
    train, names = make(cfg.num_examples, cfg.split_seed)
    validation, _ = make(n_eval, cfg.split_seed + 10_000)
    test, _ = make(n_eval, cfg.split_seed + 20_000)
    return ClassificationData(train, validation, test, names)


def _infer_label_names(column: pd.Series) -> list[str]:
    """The label values seen, sorted; integers numerically and only those seen ({0, 7}: two classes)."""
    values = {_label_text(v) for v in column.tolist()}
    if all(_is_int(v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _label_text(value: object) -> str:
    return str(value).strip()


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip()


def _check_blank_labels(df: pd.DataFrame, column: str, where: str) -> None:
    """A blank label would become a class named "" (csv) or "nan" (json): refuse it, naming its row."""
    blank = [i for i, v in enumerate(df[column].tolist()) if _is_blank(v)]
    if blank:
        more = f"; {len(blank)} blank labels in all" if len(blank) > 1 else ""
        raise DataError(
            f"{where}: blank label (column {column!r}) in row {blank[0] + 1} of {df.attrs.get('source', 'the data')} "
            f"(data rows counted from 1, a header row not counted){more}"
        )


def _check_columns(df: pd.DataFrame, cfg: DataConfig, where: str) -> None:
    for key in ("text_column", "label_column", "text_pair_column"):
        col = getattr(cfg, key)
        if col is not None and col not in df.columns:
            cols = ", ".join(map(str, df.columns))
            raise ConfigError(f"data.{key}", f"column {col!r} not found in {where}; columns: {cols}")


def _to_split(df: pd.DataFrame, cfg: DataConfig, label_names: list[str], where: str) -> Split:
    index = {name: i for i, name in enumerate(label_names)}
    raw = [_label_text(v) for v in df[cfg.label_column].tolist()]
    unknown = sorted({v for v in raw if v not in index})
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not in data.label_names {label_names}")
    texts = df[cfg.text_column].astype(str).tolist()
    pairs = df[cfg.text_pair_column].astype(str).tolist() if cfg.text_pair_column else None
    return Split(texts, np.array([index[v] for v in raw]), pairs)


def stratified_split(labels: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified split into (kept, held-out) index arrays; held-out gets ``fraction`` of each class."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.append(idx[: int(round(fraction * len(idx)))])
    held_idx = np.sort(np.concatenate(held))
    kept_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return kept_idx, held_idx


def stratified_sample(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Seeded sample of ``n`` indices keeping class proportions (up to rounding)."""
    _, held = stratified_split(labels, n / len(labels), seed=seed)
    return held


def _cap(split: Split, n: int, seed: int) -> Split:
    return split if len(split) <= n else split.subset(stratified_sample(split.labels, n, seed=seed))
