"""Text-classification data: files (csv/tsv/jsonl), ``datasets`` datasets or synthetic, split and mapped.

Everything downstream sees :class:`ClassificationData`: three :class:`Split`\\ s with integer labels and
a shared ``label_names`` list. Splits and subsamples are seeded by ``data.split_seed`` (not the training
seed), so all seeds of a sweep see the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .synthetic import make_synthetic


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray
    text_pairs: list[str] | None = None
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.ids is None:
            self.ids = np.arange(len(self.texts))

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> Split:
        pairs = [self.text_pairs[i] for i in index] if self.text_pairs is not None else None
        return Split([self.texts[i] for i in index], self.labels[index], pairs, self.ids[index])

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
    train_df = _read_table(cfg, cfg.train, "data.train")
    val_df = _read_table(cfg, cfg.validation, "data.validation") if cfg.validation else None
    test_df = _read_table(cfg, cfg.test, "data.test") if cfg.test else None

    for df, where in ((train_df, "data.train"), (val_df, "data.validation"), (test_df, "data.test")):
        if df is not None:
            _check_columns(df, cfg, where)
    label_names = cfg.label_names or _infer_label_names(train_df[cfg.label_column])
    if len(label_names) < 2:
        raise ConfigError("data.label_column", f"needs at least two classes, found {len(label_names)}: {label_names}")
    train = _to_split(train_df, cfg, label_names, "data.train")
    if val_df is None:
        train_idx, val_idx = stratified_split(train.labels, cfg.val_fraction, seed=cfg.split_seed)
        train, validation = train.subset(train_idx), train.subset(val_idx)
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


def load_split(cfg: DataConfig, path: str, label_names: list[str], *, where: str) -> Split:
    """One whole file read with the same settings as the training data (e.g. held-out items to track)."""
    if cfg.source == "chaosnli":
        return _chaosnli_split(path, where)
    df = _read_table(cfg, path, where)
    _check_columns(df, cfg, where)
    return _to_split(df, cfg, label_names, where)


CHAOSNLI_LABELS = ["entailment", "neutral", "contradiction"]


def _chaosnli_split(path: str, where: str) -> Split:
    """ChaosNLI items with the 100-vote majority label (order e, n, c); ids are row numbers in the file."""
    from ..dynamics.entropy import load_chaosnli

    if not Path(path).is_file():
        raise DataError(f"{where}: file not found: {path}")
    df = load_chaosnli(path)
    if df.attrs.get("task") not in (None, "nli"):
        raise DataError(f"{where}: only SNLI/MNLI ChaosNLI files are supported for training, got {path}")
    return Split(df["premise"].tolist(), df["majority_label"].to_numpy(), df["hypothesis"].tolist())


def _chaosnli(cfg: DataConfig) -> ClassificationData:
    """Train on one ChaosNLI subset's majority labels (Steele's protocol adapted to the data we have)."""
    pool = _chaosnli_split(cfg.train, "data.train")  # type: ignore[arg-type]
    if cfg.validation:
        train, validation = pool, _chaosnli_split(cfg.validation, "data.validation")
    else:
        train_idx, val_idx = stratified_split(pool.labels, cfg.val_fraction, seed=cfg.split_seed)
        train, validation = pool.subset(train_idx), pool.subset(val_idx)
    test = _chaosnli_split(cfg.test, "data.test") if cfg.test else None
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


def _read_table(cfg: DataConfig, path_str: str | None, where: str) -> pd.DataFrame:
    if cfg.source == "hf":
        return _read_hf(path_str, where)
    path = Path(path_str)  # type: ignore[arg-type]
    if not path.is_file():
        raise DataError(f"{where}: file not found: {path}")
    fmt = cfg.format or {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix)
    if fmt is None:
        raise ConfigError("data.format", f"cannot infer from suffix {path.suffix!r}; allowed: csv, tsv, jsonl")
    header = 0 if cfg.header else None
    try:
        if fmt == "jsonl":
            df = pd.read_json(path, lines=True)
        else:
            # QUOTE_NONE for tsv: text fields contain stray quotes that would swallow lines.
            df = pd.read_csv(
                path,
                sep="\t" if fmt == "tsv" else ",",
                header=header,
                names=cfg.column_names,
                quoting=3 if fmt == "tsv" else 0,
                dtype=str,
                keep_default_na=False,
            )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{where}: cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    if len(df) == 0:
        raise DataError(f"{where}: {path} has no rows")
    return df


def _read_hf(name: str | None, where: str) -> pd.DataFrame:
    """A ``datasets`` dataset: ``path/to/saved`` (load_from_disk) or ``name[:split]`` (load_dataset)."""
    import datasets

    try:
        if name and Path(name.split(":")[0]).is_dir():
            ds = datasets.load_from_disk(name.split(":")[0])
            split = name.split(":")[1] if ":" in name else None
        else:
            base, _, split = (name or "").partition(":")
            ds = datasets.load_dataset(base)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or "train"]
    except Exception as exc:  # datasets raises many types; the user needs one line
        raise DataError(f"{where}: cannot load dataset {name!r}: {str(exc).splitlines()[0]}") from None
    return ds.to_pandas()


def _infer_label_names(column: pd.Series) -> list[str]:
    values = column.tolist()
    try:
        ints = sorted({int(v) for v in values})
        return [str(i) for i in range(max(ints) + 1)] if ints and min(ints) >= 0 else [str(i) for i in ints]
    except (TypeError, ValueError):
        return sorted({str(v) for v in values})


def _check_columns(df: pd.DataFrame, cfg: DataConfig, where: str) -> None:
    for key in ("text_column", "label_column", "text_pair_column"):
        col = getattr(cfg, key)
        if col is not None and col not in df.columns:
            cols = ", ".join(map(str, df.columns))
            raise ConfigError(f"data.{key}", f"column {col!r} not found in {where}; columns: {cols}")


def _to_split(df: pd.DataFrame, cfg: DataConfig, label_names: list[str], where: str) -> Split:
    index = {name: i for i, name in enumerate(label_names)}
    raw = df[cfg.label_column].astype(str).str.strip().tolist()
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
