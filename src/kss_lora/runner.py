"""One training run: config in, run directory out.

The loop is deliberately plain PyTorch (AdamW, warm-up + decay, gradient clipping) so that every number
in ``result.json`` is traceable to a few lines here. Measurements follow docs/spec.md §2: ``train_loss`` is an
eval-mode pass over the whole training set on the targets trained on, never the running average.

What differs between tasks (classification, causal-LM: data, tokenization, per-example loss) lives in
:mod:`kss_lora.tasks`; both reduce an example to one loss in nats. The same loop runs as one process or
as N data-parallel processes (:mod:`kss_lora.launch`): each global batch is sharded across ranks and the
gradients summed, so N processes compute what one would; only rank 0 writes the run directory. Under
FSDP2 (:mod:`kss_lora.fsdp`) the weights are sharded too, and the same arithmetic holds.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rundir
from .config import RunConfig, to_yaml
from .dynamics.records import DynamicsRecorder
from .errors import KSSError, TrainingDiverged
from .fsdp import full_trainable_state, resident_parameter_mb, shard_model
from .launch import DistContext, init_distributed, mask_digest, params_digest, peak_memory_mb
from .methods import ResolvedMethod, masked_parameters, resolve_method, wrap_model
from .methods.kss import attach_kss
from .models import load_tokenizer
from .precision.runtime import PrecisionRuntime
from .tasks import EvalOutput, Task, make_task
from .tasks.classification import Batches, collate, mean_loss, predict_logits, tokenize


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
        self.dist: DistContext = init_distributed(cfg.launcher, cfg.train.device)
        self.device = self._device(cfg.train.device)
        self.task: Task = make_task(cfg)
        self.task.load_data()
        seed_everything(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
        base = self.task.build_model(self.tokenizer)
        self.precision = PrecisionRuntime(cfg.precision, self.device)
        # FSDP2 moves the weights to the device one block at a time while sharding them, so a rank never
        # holds the whole model there; everything else goes to the device now.
        place = self.device if self.dist.fsdp is None else torch.device("cpu")
        base = self.precision.before_adapters(base.to(place))
        wrapped = wrap_model(base, self.method, task_type=self.task.peft_task_type).to(place)
        self.model = self.precision.after_adapters(wrapped)
        if self.dist.fsdp is not None:
            self.model = self._shard(self.model)
        self.task.tokenize(self.tokenizer)
        self.recorder: DynamicsRecorder | None = None

    def _device(self, wanted: str) -> torch.device:
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if self.dist.enabled and wanted == "cuda":
            return torch.device("cuda", self.dist.local_rank)  # one GPU per process
        return torch.device(wanted)

    def _shard(self, model: torch.nn.Module) -> torch.nn.Module:
        # Before sharding: each rank's shards are cut from its own full copy.
        self.dist.broadcast_params([p for p in model.parameters() if p.requires_grad], device=self.device)
        return shard_model(model, self.dist.world_size, self.device, self.dist.fsdp)

    # The task's splits, under the names this class has always had.
    @property
    def train_batches(self) -> Any:
        return self.task.train_batches

    @property
    def val_batches(self) -> Any:
        return self.task.val_batches

    @property
    def test_batches(self) -> Any:
        return self.task.test_batches

    @property
    def heldout_batches(self) -> Any:
        return self.task.heldout_batches

    @property
    def pad_id(self) -> int:
        return self.task.pad_id

    @property
    def is_noisy(self) -> np.ndarray | None:
        return self.task.is_noisy

    @property
    def data(self) -> Any:
        return self.task.data

    def run_dir(self) -> Path:
        out = self.cfg.output
        return Path(out.dir) / (out.run_name or f"{self.method.label()}-{self.cfg.run_id()}")

    # ------------------------------------------------------------------------------------------------
    def evaluate_split(self, batches: Any) -> EvalOutput:
        """Eval-mode outputs for a whole split; sharded over data-parallel ranks and gathered on all."""
        n = len(batches)
        local, real = self.dist.padded_shard(np.arange(n))
        out = self.task.evaluate(
            self.model,
            batches,
            local,
            batch_size=self.cfg.train.eval_batch_size,
            device=self.device,
            autocast=self.precision.autocast,
        )
        if not self.dist.enabled:
            return out
        if real < len(local):  # FSDP2 padding is dropped
            local, out = local[:real], out.subset(np.arange(real))
        return EvalOutput.assemble(self.dist.gather((local, out)), n)

    def logits(self, batches: Batches) -> np.ndarray:
        """Classification: eval-mode logits ``[N, K]`` (the dynamics record of each example)."""
        return self.evaluate_split(batches).record

    def checkpoint(self, step: int) -> EvalOutput:
        """Eval-mode outputs over the training set, recorded as a dynamics checkpoint when tracking is on."""
        train_out = self.evaluate_split(self.train_batches)
        if self.recorder is not None:
            heldout = self.evaluate_split(self.heldout_batches).record if self.heldout_batches is not None else None
            self.recorder.record_checkpoint(step, train_out.record, heldout)
        return train_out

    def epoch_metrics(self, epoch: int, step: int, running: float) -> dict[str, Any]:
        train_out = self.checkpoint(step)
        clean = self.task.clean_train_output(train_out, self.evaluate_split)
        train = self.task.split_metrics("train", train_out)
        val = self.task.split_metrics("val", self.evaluate_split(self.val_batches))
        train_loss, train_loss_clean, val_loss = train["train_loss"], float(clean.loss.mean()), val["val_loss"]
        return {
            "epoch": epoch,
            "step": step,
            **train,
            "train_loss_clean": train_loss_clean,
            "train_loss_running": running,
            **val,
            "gap": val_loss - train_loss,
            "gap_clean": val_loss - train_loss_clean,
        }

    def train(self, directory: Path) -> dict[str, Any]:
        cfg, tc, dist = self.cfg, self.cfg.train, self.dist
        named = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        params = list(named.values())
        if dist.fsdp is None:
            dist.broadcast_params(params)  # FSDP2: done before sharding
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        micro = tc.batch_size // tc.grad_accum
        steps_per_epoch = math.ceil(len(self.train_batches) / tc.batch_size)
        total = min(tc.epochs * steps_per_epoch, tc.max_steps or 10**12)
        track = cfg.tracking
        if track.per_example:
            self.recorder = DynamicsRecorder(steps_per_epoch=steps_per_epoch, **self.task.recorder_kwargs())
            self.checkpoint(0)
        from transformers import get_scheduler

        sched_name = "constant_with_warmup" if tc.scheduler == "constant" else tc.scheduler
        scheduler = get_scheduler(
            sched_name, optimizer, num_warmup_steps=int(tc.warmup_ratio * total), num_training_steps=total
        )
        kss = self.method.kss_config(tc.seed)
        masker = None
        if self.method.masked and kss is not None:
            masker = attach_kss(self.model, optimizer, kss, params=masked_parameters(self.model, self.method))

        # Re-seed here too: dropout draws from the global RNG, and whatever ran between preparation and
        # training (another run, a test) must not change this run's numbers.
        seed_everything(tc.seed)
        order_gen = np.random.default_rng(tc.seed)  # the same permutation on every rank
        bar = _progress(total, enabled=tc.progress and dist.is_main, desc=self.method.label())
        step, history = 0, []
        self.model.train()
        for epoch in range(1, tc.epochs + 1):
            perm = order_gen.permutation(len(self.train_batches))
            running_sum, running_n = 0.0, 0.0
            for start in range(0, len(perm), tc.batch_size):
                batch_idx = perm[start : start + tc.batch_size]
                local, n_real = dist.padded_shard(batch_idx)
                local_sum, bad = 0.0, 0.0
                for m_start in range(0, len(local), micro):
                    index = local[m_start : m_start + micro]
                    real = min(len(index), max(n_real - m_start, 0))  # FSDP2 pads the last ones of a rank
                    if dist.fsdp is not None:  # reduce-scatter once per step, on the last micro-batch
                        self.model.set_requires_gradient_sync(m_start + micro >= len(local))
                    losses, record = self.task.train_losses(
                        self.model, self.train_batches, index, self.device, self.precision.autocast
                    )
                    # A padding-only pass keeps FSDP2's collectives in step and contributes nothing.
                    loss = losses[:real].mean() if real else losses.sum() * 0.0
                    if track.free and real:
                        self.recorder.record_batch(step + 1, index[:real], record[:real])
                    if not torch.isfinite(loss):
                        if not dist.enabled:
                            raise TrainingDiverged(f"loss became {loss.item()} at step {step}, epoch {epoch}")
                        bad = 1.0  # raised below on every rank together, so no rank waits forever
                        if dist.fsdp is None:  # FSDP2 must still run every rank's remaining passes
                            break
                    (loss * real / len(batch_idx)).backward()
                    local_sum += loss.item() * real
                summed = dist.all_reduce_grads(params, torch.tensor([local_sum, float(n_real), bad]))
                if dist.enabled and summed[2] > 0:
                    raise TrainingDiverged(f"loss became non-finite at step {step}, epoch {epoch}")
                running_sum += float(summed[0]) if dist.enabled else local_sum
                running_n += float(summed[1]) if dist.enabled else len(local)
                if tc.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running_sum / max(running_n, 1):.4f}", epoch=epoch)
                if step >= total:
                    break
                if track.every_steps and step % track.every_steps == 0 and step % steps_per_epoch:
                    self.checkpoint(step)
            row = self.epoch_metrics(epoch, step, running_sum / max(running_n, 1))
            row["time_s"] = round(time.time() - self.t0, 2)
            if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
                raise TrainingDiverged(f"evaluation loss is not finite after epoch {epoch}: {row}")
            if dist.is_main:
                rundir.append_jsonl(directory / rundir.METRICS_NAME, row)
            history.append(row)
            if step >= total:
                break
        bar.close()
        out: dict[str, Any] = {"history": history, "steps": step, "kss": kss}
        if dist.enabled:
            out["distributed"] = self._check_ranks_agree(masker, named, step)
        if masker is not None:
            masker.detach()
        if self.recorder is not None:
            self._gather_free_records()
            if dist.is_main:
                self.recorder.save(directory)
        return out

    def _check_ranks_agree(self, masker: Any, named: dict[str, torch.nn.Parameter], steps: int) -> dict[str, Any]:
        """Compare, across ranks, a hash of the KSS masks (first and last steps) and of the trained weights."""
        probe = sorted({0, max(steps - 1, 0)})
        mine = {
            "masks": mask_digest(masker, probe) if masker is not None else None,
            "params": params_digest(named),
            "param_mb": resident_parameter_mb(self.model),
            "peak_mb": peak_memory_mb(self.device),
        }
        every = self.dist.gather(mine)
        info = {
            "world_size": self.dist.world_size,
            "backend": self.dist.backend,
            "strategy": self.dist.strategy,
            "masks_agree": len({d["masks"] for d in every}) == 1,
            "params_agree": len({d["params"] for d in every}) == 1,
            "mask_digest": mine["masks"],
            "param_mb_per_rank": [d["param_mb"] for d in every],
            "peak_memory_mb_per_rank": [d["peak_mb"] for d in every],
            "peak_memory_kind": "cuda allocated" if self.device.type == "cuda" else "process RSS",
        }
        if not (info["masks_agree"] and info["params_agree"]):
            raise RuntimeError(f"data-parallel ranks diverged: {every}")
        return info

    def _gather_free_records(self) -> None:
        """Training-pass records stay on the rank that computed them; rank 0 saves them all."""
        rec = self.recorder
        if not self.dist.enabled or not rec.free_logits:
            return
        parts = self.dist.gather((rec.free_step, rec.free_index, rec.free_logits))
        rec.free_step = [a for p in parts for a in p[0]]
        rec.free_index = [a for p in parts for a in p[1]]
        rec.free_logits = [a for p in parts for a in p[2]]

    def execute(self, directory: Path | None = None) -> dict[str, Any]:
        """Train, evaluate and write the run directory; returns result.json's content (never raises for
        training failures: they are recorded with ``status: failed``). With data-parallel processes every
        rank trains and returns the result; only rank 0 writes."""
        directory = Path(directory) if directory is not None else self.run_dir()
        main = self.dist.is_main
        if main:
            prepare_directory(directory)
            rundir.atomic_write_text(directory / rundir.CONFIG_NAME, to_yaml(self.cfg))
            rundir.atomic_write_json(directory / rundir.ENV_NAME, rundir.environment())
            self.task.save_extra(directory)
        self.t0 = time.time()
        result = self.base_result()
        try:
            out = self.train(directory)
            result.update(self.final_metrics(out["history"]), steps=out["steps"], status="ok")
            if "distributed" in out:
                result["distributed"] = out["distributed"]
            if self.cfg.output.save_adapter:
                # FSDP2: every rank takes part in gathering the trainable tensors; rank 0 writes them.
                state = full_trainable_state(self.model) if self.dist.fsdp is not None else None
                if main:
                    self.save(directory / "adapter", out["kss"], state)
        except Exception as exc:  # recorded, not raised: a sweep goes on after a failed run
            if main:
                (directory / "error.log").write_text(traceback.format_exc())
            else:  # only rank 0 writes files: another rank's failure goes to its stderr
                print(f"[rank {self.dist.rank}] {traceback.format_exc()}", file=sys.stderr)
            result.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        result["wall_time_s"] = round(time.time() - self.t0, 2)
        if main:
            rundir.atomic_write_json(directory / rundir.RESULT_NAME, result)
        return result

    def base_result(self) -> dict[str, Any]:
        m, c = self.method, self.cfg
        return {
            "status": "running",
            "error": None,
            "run_id": c.run_id(),
            "method": m.name,
            "preset": m.preset,
            "condition": m.label(),
            "rank": m.rank,
            "gamma": m.gamma,
            "sparsity": m.sparsity,
            "mask_mode": m.mask_mode,
            "seed": c.train.seed,
            "noise_rate": c.noise.rate,
            "noise_kind": c.noise.kind,
            "precision": c.precision.mode,
            "model": c.model.name,
            "task": c.model.task,
            "lr": c.train.lr,
            "n_train": len(self.train_batches),
            "n_val": len(self.val_batches),
            "n_test": len(self.test_batches) if self.test_batches is not None else 0,
            "description": c.description,
            **self.task.result_extra(),
        }

    def final_metrics(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        last = history[-1]
        out: dict[str, Any] = {k: v for k, v in last.items() if k not in ("epoch", "step", "time_s")}
        out["epochs"] = last["epoch"]
        out["test_loss"] = out["test_accuracy"] = None
        if self.test_batches is not None:
            out.update(self.task.split_metrics("test", self.evaluate_split(self.test_batches)))
        if self.is_noisy is not None:
            out["noise_rate_realised"] = float(self.is_noisy.mean())
        return out

    def save(self, directory: Path, kss: Any, state: dict[str, torch.Tensor] | None = None) -> None:
        from .adapter import save_run_adapter

        label_names = getattr(self.data, "label_names", None)
        save_run_adapter(
            self.model, directory, self.cfg, tokenizer=self.tokenizer, label_names=label_names, kss=kss, state=state
        )


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


__all__ = ["Batches", "KSSError", "Run", "collate", "mean_loss", "predict_logits", "run", "tokenize"]
