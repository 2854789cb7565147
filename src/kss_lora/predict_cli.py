"""``kss predict RUN_DIR``: labels with probabilities (classification) or responses (causal-LM).

    kss predict runs/quickstart/<run> --text "stocks fell as rates rose" --text "the striker scored twice"
    kss predict runs/agnews/<run> --file new.csv -o predictions.csv        # csv/tsv/jsonl with a header row

``--text`` prints one line per text: ``label<TAB>probability<TAB>text`` (causal-LM: the response, its
newlines written as ``\\n``). ``--file`` writes (to ``-o``, else stdout) a CSV with the input column(s),
``predicted_label`` and one ``prob_<label>`` column per class (causal-LM: ``response``). Everything is read and
checked before the model loads, and the output is written atomically, so bad input leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .commands import command
from .errors import ConfigError, DataError

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory (or its adapter/ folder)")
    p.add_argument("--text", action="append", help="a text to classify, or a prompt (repeatable)")
    p.add_argument("--text-pair", action="append", help="second text of a pair, one per --text (e.g. NLI)")
    p.add_argument("--file", help="csv, tsv or jsonl file with a header row (one example per row)")
    p.add_argument("--text-column", help="column of --file holding the text (default: the run's data.text_column)")
    p.add_argument("--text-pair-column", help="column of --file holding the second text of a pair")
    p.add_argument("-o", "--output", help="CSV file to write --file's predictions to (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass (default 32)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="causal-LM: most tokens generated (greedy)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the checkpoint (never from the run)"
    )


def predict_command(args: argparse.Namespace) -> int:
    from .predict import locate

    _check_args(args)
    folders = locate(args.run_dir)  # bad run directories fail before anything is read or loaded
    from .adapter import read_model_info

    info = read_model_info(folders.adapter_dir) or {}
    table = _read_input(args, info) if args.file else None
    _check_pairs(args, info)
    output = _check_output(args.output, args.overwrite) if args.output else None

    from .predict import load_run

    run = load_run(args.run_dir, device=args.device, trust_remote_code=args.trust_remote_code)
    if table is None:
        _predict_texts(run, args)
    else:
        _predict_file(run, args, table, output)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if bool(args.text) == bool(args.file):
        raise ConfigError("--text", "give one or more --text, or --file (not both)")
    if args.text_pair and len(args.text_pair) != len(args.text or []):
        raise ConfigError("--text-pair", f"give one per --text ({len(args.text or [])}), got {len(args.text_pair)}")
    if args.output and not args.file:
        raise ConfigError("--output", "writes --file's predictions; --text prints to the terminal")
    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be at least 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens", f"must be at least 1, got {args.max_new_tokens}")


def _check_pairs(args: argparse.Namespace, info: dict[str, Any]) -> None:
    """A run trained on text pairs (NLI) classifies pairs: one text alone would be a silently wrong answer."""
    if not info.get("text_pairs"):
        return
    if args.file and args.text_pair_column is None:
        raise ConfigError("--text-pair-column", "this run was trained on text pairs; name the second text's column")
    if args.text and not args.text_pair:
        raise ConfigError("--text-pair", "this run was trained on text pairs; give one --text-pair per --text")


def _read_input(args: argparse.Namespace, info: dict[str, Any]) -> Any:
    import pandas as pd

    path = Path(args.file)
    if not path.is_file():
        raise DataError(f"--file: file not found: {path}")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError("--file", f"cannot tell the format from {path.suffix!r}; allowed: .csv, .tsv, .jsonl")
    try:
        if fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:  # as training reads files: strings kept as written; tsv without quote handling
            sep = "\t" if fmt == "tsv" else ","
            df = pd.read_csv(path, sep=sep, quoting=3 if fmt == "tsv" else 0, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"--file: cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    if len(df) == 0:
        raise DataError(f"--file: {path} has no rows")
    causal = info.get("task") == "causal-lm"
    args.text_column = args.text_column or info.get("prompt_column" if causal else "text_column") or "text"
    if args.text_pair_column is None:
        pair = info.get("text_pair_column")
        args.text_pair_column = pair if pair in df.columns else None
    for flag, col in (("--text-column", args.text_column), ("--text-pair-column", args.text_pair_column)):
        if col is not None and col not in df.columns:
            columns = ", ".join(map(str, df.columns))
            raise ConfigError(flag, f"column {col!r} not found in {path}; columns: {columns}")
    return df


def _check_output(output: str, overwrite: bool) -> Path:
    path = Path(output)
    if path.is_dir():
        raise ConfigError("--output", f"{path} is a directory; give a file name, e.g. {path}/predictions.csv")
    if path.exists() and not overwrite:
        raise ConfigError("--output", f"{path} exists; pass --overwrite to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError("--output", f"{path.parent} is not a directory")
    return path


def _predict_texts(run: Any, args: argparse.Namespace) -> None:
    from .predict import generate, predict_logits, probabilities

    if run.task == "causal-lm":
        for response in generate(run, args.text, args.text_pair, max_new_tokens=args.max_new_tokens):
            print(response.replace("\n", "\\n"))
        return
    probs = probabilities(predict_logits(run, args.text, args.text_pair, batch_size=args.batch_size))
    for text, row in zip(args.text, probs):
        print(f"{run.label_names[int(row.argmax())]}\t{row.max():.4f}\t{text}")


def _predict_file(run: Any, args: argparse.Namespace, df: Any, output: Path | None) -> None:
    import pandas as pd

    from .predict import generate, predict_logits, probabilities

    texts = df[args.text_column].astype(str).tolist()
    pairs = df[args.text_pair_column].astype(str).tolist() if args.text_pair_column else None
    progress = Progress(len(texts)) if len(texts) > args.batch_size else None
    keep = [c for c in (args.text_column, args.text_pair_column) if c is not None]
    out = df[keep].copy()
    if run.task == "causal-lm":
        out["response"] = generate(run, texts, pairs, max_new_tokens=args.max_new_tokens, progress=progress)
    else:
        probs = probabilities(predict_logits(run, texts, pairs, batch_size=args.batch_size, progress=progress))
        out["predicted_label"] = [run.label_names[i] for i in probs.argmax(axis=1)]
        probs_df = pd.DataFrame(probs, columns=[f"prob_{name}" for name in run.label_names], index=out.index)
        out = pd.concat([out, probs_df], axis=1)
    if progress is not None:
        progress.close()
    if output is None:
        out.to_csv(sys.stdout, index=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # open() honours the umask (mkstemp would not)
    try:
        out.to_csv(tmp, index=False)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"wrote {len(out)} predictions to {output}", file=sys.stderr)


class Progress:
    """Progress on stderr: a bar on a terminal, else a line at every 10% (logs stay readable)."""

    def __init__(self, total: int):
        self.total = total
        self.tty = sys.stderr.isatty()
        self.next_tenth = 1
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="example", file=sys.stderr, leave=False)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        tenth = done * 10 // max(total, 1)
        if tenth >= self.next_tenth:
            print(f"predict: {done}/{total} examples ({tenth * 10}%)", file=sys.stderr)
            self.next_tenth = tenth + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


command("predict", "predict labels (or generate responses) with a trained run")(add_predict_args)(predict_command)
