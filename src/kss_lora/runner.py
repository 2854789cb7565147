"""One training run: config in, run directory out.

The loop is deliberately plain PyTorch (AdamW, warm-up + decay, gradient clipping) so that every number
in ``result.json`` is traceable to a few lines here. Measurements follow SPEC §2: ``train_loss`` is an
eval-mode pass over the whole training set on the labels trained on, never the running average.
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import rundir
from .config import RunConfig, to_yaml
from .data import ClassificationData, Split, load_classification_data, load_split
from .dynamics.metrics import per_example_from_logits
from .dynamics.records import DynamicsRecorder
from .errors import KSSError, TrainingDiverged
from .methods import ResolvedMethod, masked_parameters, resolve_method, wrap_model
from .methods.kss import attach_kss
from .models import load_model, load_tokenizer
from .precision.runtime import PrecisionRuntime


@dataclass
class Batches:
    """A tokenized split: token ids per example, labels, and the example ids."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize(split: Split, tokenizer: Any, max_length: int) -> Batches:
    enc = tokenizer(split.texts, split.text_pairs, truncation=True, max_length=max_length)
    return Batches(enc["input_ids"], enc.get("token_type_ids"), split.labels.copy(), split.ids)


def collate(batches: Batches, index: np.ndarray, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    rows = [batches.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r)
        mask[j, : len(r)] = 1
    out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if batches.token_type_ids is not None:
        tt = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(index):
            tt[j, : len(batches.token_type_ids[i])] = torch.tensor(batches.token_type_ids[i])
        out["token_type_ids"] = tt.to(device)
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Batches, *, batch_size: int, pad_id: int, device: torch.device) -> np.ndarray:
    """Eval-mode logits [N, K] for every example; batched by length to waste little compute on padding."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(r) for r in batches.input_ids], kind="stable")
    out: list[np.ndarray] = [None] * len(order)  # type: ignore[list-item]
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        logits = model(**collate(batches, index, pad_id, device)).logits.float().cpu().numpy()
        for j, i in enumerate(index):
            out[i] = logits[j]
    model.train(was_training)
    return np.stack(out)


def mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(per_example_from_logits(logits, labels).loss.mean())


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Run:
    """Everything one run needs, prepared before the run directory exists (so bad input leaves nothing)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.method: ResolvedMethod = resolve_method(cfg.method)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.train.device == "auto" else cfg.train.device
        )
        self.data: ClassificationData = load_classification_data(cfg.data)
        self.clean_train_labels = self.data.train.labels.copy()
        self.is_noisy: np.ndarray | None = None
        if cfg.noise.active:
            self._inject_noise()
        seed_everything(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
        base = load_model(
            cfg.model.name, task=cfg.model.task, num_labels=self.data.num_labels, tokenizer=self.tokenizer,
            seed=cfg.train.seed, trust_remote_code=cfg.model.trust_remote_code,
        )
        self.precision = PrecisionRuntime(cfg.precision, self.device)
        base = self.precision.before_adapters(base.to(self.device))
        self.model = self.precision.after_adapters(wrap_model(base, self.method, task_type="SEQ_CLS").to(self.device))
        self.pad_id = self.tokenizer.pad_token_id or 0
        ml = cfg.model.max_length
        self.train_batches = tokenize(self.data.train, self.tokenizer, ml)
        self.val_batches = tokenize(self.data.validation, self.tokenizer, ml)
        self.test_batches = tokenize(self.data.test, self.tokenizer, ml) if self.data.test is not None else None
        self.heldout_batches = None
        if cfg.tracking.heldout:
            heldout = load_split(cfg.data, cfg.tracking.heldout, self.data.label_names, where="tracking.heldout")
            self.heldout_batches = tokenize(heldout, self.tokenizer, ml)
        self.recorder: DynamicsRecorder | None = None

    def _inject_noise(self) -> None:
        from .noise import inject_label_noise

        n = self.cfg.noise
        result = inject_label_noise(
            self.data.train.labels, rate=None if n.transition is not None else n.rate, num_classes=self.data.num_labels, kind=n.kind,
            seed=n.seed if n.seed is not None else self.cfg.train.seed, transition=n.transition, pairs=n.pairs,
        )
        self.data.train = self.data.train.with_labels(result.noisy_labels)
        self.is_noisy = result.is_noisy

    def run_dir(self) -> Path:
        out = self.cfg.output
        return Path(out.dir) / (out.run_name or f"{self.method.label()}-{self.cfg.run_id()}")

    # ------------------------------------------------------------------------------------------------
    def logits(self, batches: Batches) -> np.ndarray:
        with self.precision.autocast():
            return predict_logits(
                self.model, batches, batch_size=self.cfg.train.eval_batch_size, pad_id=self.pad_id, device=self.device
            )

    def evaluate(self, batches: Batches, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
        logits = self.logits(batches)
        return float(mean_loss(logits, labels)), float((logits.argmax(1) == labels).mean()), logits

    def checkpoint(self, step: int) -> np.ndarray:
        """Eval-mode logits over the training set, recorded as a dynamics checkpoint when tracking is on."""
        train_logits = self.logits(self.train_batches)
        if self.recorder is not None:
            heldout = self.logits(self.heldout_batches) if self.heldout_batches is not None else None
            self.recorder.record_checkpoint(step, train_logits, heldout)
        return train_logits

    def epoch_metrics(self, epoch: int, step: int, running: float) -> dict[str, Any]:
        train_logits = self.checkpoint(step)
        labels = self.train_batches.labels
        train_loss, train_acc = mean_loss(train_logits, labels), float((train_logits.argmax(1) == labels).mean())
        train_loss_clean = mean_loss(train_logits, self.clean_train_labels)
        val_loss, val_acc, _ = self.evaluate(self.val_batches, self.val_batches.labels)
        return {
            "epoch": epoch, "step": step, "train_loss": train_loss, "train_loss_clean": train_loss_clean,
            "train_loss_running": running, "train_accuracy": train_acc, "val_loss": val_loss,
            "val_accuracy": val_acc, "gap": val_loss - train_loss, "gap_clean": val_loss - train_loss_clean,
        }

    def train(self, directory: Path) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        micro = tc.batch_size // tc.grad_accum
        steps_per_epoch = math.ceil(len(self.train_batches) / tc.batch_size)
        total = min(tc.epochs * steps_per_epoch, tc.max_steps or 10**12)
        track = cfg.tracking
        if track.per_example:
            self.recorder = DynamicsRecorder(
                labels=self.train_batches.labels, ids=self.train_batches.ids, clean_labels=self.clean_train_labels,
                is_noisy=self.is_noisy, steps_per_epoch=steps_per_epoch,
                heldout_labels=self.heldout_batches.labels if self.heldout_batches is not None else None,
                heldout_ids=self.heldout_batches.ids if self.heldout_batches is not None else None,
            )
            self.checkpoint(0)
        from transformers import get_scheduler

        sched_name = "constant_with_warmup" if tc.scheduler == "constant" else tc.scheduler
        scheduler = get_scheduler(sched_name, optimizer, num_warmup_steps=int(tc.warmup_ratio * total), num_training_steps=total)
        kss = self.method.kss_config(tc.seed)
        masker = None
        if self.method.masked and kss is not None:
            masker = attach_kss(self.model, optimizer, kss, params=masked_parameters(self.model, self.method))

        # Re-seed here too: dropout draws from the global RNG, and whatever ran between preparation and
        # training (another run, a test) must not change this run's numbers.
        seed_everything(tc.seed)
        order_gen = np.random.default_rng(tc.seed)
        labels_t = torch.as_tensor(self.train_batches.labels)
        bar = _progress(total, enabled=tc.progress, desc=self.method.label())
        step, history = 0, []
        self.model.train()
        for epoch in range(1, tc.epochs + 1):
            perm = order_gen.permutation(len(self.train_batches))
            running_sum, running_n = 0.0, 0
            for start in range(0, len(perm), tc.batch_size):
                batch_idx = perm[start : start + tc.batch_size]
                for m_start in range(0, len(batch_idx), micro):
                    index = batch_idx[m_start : m_start + micro]
                    inputs = collate(self.train_batches, index, self.pad_id, self.device)
                    with self.precision.autocast():
                        logits = self.model(**inputs).logits.float()
                    if track.free:
                        self.recorder.record_batch(step + 1, index, logits.detach().cpu().numpy())
                    loss = nn.functional.cross_entropy(logits, labels_t[index].to(self.device))
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(f"loss became {loss.item()} at step {step}, epoch {epoch}")
                    (loss * len(index) / len(batch_idx)).backward()
                    running_sum += loss.item() * len(index)
                    running_n += len(index)
                if tc.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running_sum / running_n:.4f}", epoch=epoch)
                if step >= total:
                    break
                if track.every_steps and step % track.every_steps == 0 and step % steps_per_epoch:
                    self.checkpoint(step)
            row = self.epoch_metrics(epoch, step, running_sum / max(running_n, 1))
            row["time_s"] = round(time.time() - self.t0, 2)
            if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
                raise TrainingDiverged(f"evaluation loss is not finite after epoch {epoch}: {row}")
            rundir.append_jsonl(directory / rundir.METRICS_NAME, row)
            history.append(row)
            if step >= total:
                break
        bar.close()
        if masker is not None:
            masker.detach()
        if self.recorder is not None:
            self.recorder.save(directory)
        return {"history": history, "steps": step, "kss": kss}

    def execute(self, directory: Path | None = None) -> dict[str, Any]:
        """Train, evaluate and write the run directory; returns result.json's content (never raises for
        training failures: they are recorded with ``status: failed``)."""
        directory = Path(directory) if directory is not None else self.run_dir()
        prepare_directory(directory)
        rundir.atomic_write_text(directory / rundir.CONFIG_NAME, to_yaml(self.cfg))
        rundir.atomic_write_json(directory / rundir.ENV_NAME, rundir.environment())
        if self.is_noisy is not None:
            np.savez(directory / "noise.npz", is_noisy=self.is_noisy, clean_labels=self.clean_train_labels,
                     noisy_labels=self.train_batches.labels, ids=self.train_batches.ids)
        self.t0 = time.time()
        result = self.base_result()
        try:
            out = self.train(directory)
            result.update(self.final_metrics(out["history"]), steps=out["steps"], status="ok")
            if self.cfg.output.save_adapter:
                self.save(directory / "adapter", out["kss"])
        except Exception as exc:  # recorded, not raised: a sweep goes on after a failed run
            (directory / "error.log").write_text(traceback.format_exc())
            result.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        result["wall_time_s"] = round(time.time() - self.t0, 2)
        rundir.atomic_write_json(directory / rundir.RESULT_NAME, result)
        return result

    def base_result(self) -> dict[str, Any]:
        m, c = self.method, self.cfg
        return {
            "status": "running", "error": None, "run_id": c.run_id(), "method": m.name, "preset": m.preset,
            "condition": m.label(), "rank": m.rank, "gamma": m.gamma, "sparsity": m.sparsity,
            "mask_mode": m.mask_mode, "seed": c.train.seed, "noise_rate": c.noise.rate, "noise_kind": c.noise.kind,
            "precision": c.precision.mode, "model": c.model.name, "lr": c.train.lr,
            "n_train": len(self.train_batches), "n_val": len(self.val_batches),
            "n_test": len(self.test_batches) if self.test_batches is not None else 0,
            "description": c.description,
        }

    def final_metrics(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        last = history[-1]
        keys = ("train_loss", "train_loss_clean", "train_loss_running", "train_accuracy", "val_loss",
                "val_accuracy", "gap", "gap_clean")
        out: dict[str, Any] = {k: last[k] for k in keys}
        out["epochs"] = last["epoch"]
        out["test_loss"] = out["test_accuracy"] = None
        if self.test_batches is not None:
            out["test_loss"], out["test_accuracy"], _ = self.evaluate(self.test_batches, self.test_batches.labels)
        if self.is_noisy is not None:
            out["noise_rate_realised"] = float(self.is_noisy.mean())
        return out

    def save(self, directory: Path, kss: Any) -> None:
        self.model.save_pretrained(directory, safe_serialization=True)
        if kss is not None:
            kss.save(directory)


def prepare_directory(directory: Path) -> None:
    """Start a run directory afresh: a rerun (or a run killed mid-way) leaves nothing stale behind."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _progress(total: int, *, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    # disable=None lets tqdm switch itself off when stderr is not a terminal (logs stay readable).
    return tqdm(total=total, disable=True if not enabled else None, desc=desc, unit="step", leave=False)


def run(cfg: RunConfig, directory: str | Path | None = None) -> dict[str, Any]:
    """Prepare (raising :class:`KSSError` on bad input, before anything is written) and execute one run."""
    prepared = Run(cfg)
    return prepared.execute(Path(directory) if directory is not None else None)


__all__ = ["KSSError", "Run", "mean_loss", "predict_logits", "run", "tokenize"]
