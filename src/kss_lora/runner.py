"""One training run: config in, run directory out.

The loop is deliberately plain PyTorch (AdamW, warm-up + decay, gradient clipping) so that every number
in ``result.json`` is traceable to a few lines here. Measurements follow docs/spec.md §2: ``train_loss`` is an
eval-mode pass over the whole training set on the targets trained on, never the running average.

What differs between tasks (classification, causal-LM: data, tokenization, per-example loss) lives in
:mod:`kss_lora.tasks`; both reduce an example to one loss in nats. The same loop runs as one process or
as N data-parallel processes (:mod:`kss_lora.launch`): each global batch is sharded across ranks and the
gradients summed, so N processes compute what one would; only rank 0 writes the run directory. Under
FSDP2 (:mod:`kss_lora.fsdp`) the weights are sharded too, and the same arithmetic holds.

Shape of a run: :class:`Run` prepares everything (data, :func:`build_model`, tokenized splits) before
anything is written, including the variants a config cannot express (keyword arguments: a training
subset, relabelled targets, extra classes, an initial adapter, a checkpoint schedule, capped evaluation;
:mod:`kss_lora.variants`). :meth:`Run.train` is the epoch loop; :meth:`Run.step` is one optimizer step
and holds the data-parallel details. The run directory is written through
:class:`kss_lora.rundir.RunDirectory`, and its record is a :class:`kss_lora.run_result.RunResult` built
by :func:`new_result`, the same for a run that trained and one that could not be prepared.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import (
    check_resume,
    load_trainable_state,
    restore_training_state,
    save_training_state,
    trainable_state,
)
from .config import RunConfig, to_yaml
from .dynamics.records import DynamicsRecorder
from .errors import KSSError, TrainingDiverged
from .fsdp import full_trainable_state, resident_parameter_mb, shard_model
from .launch import DistContext, init_distributed, mask_digest, params_digest, peak_memory_mb
from .loop_state import LoopState, ProgressLine, check_loop_options, progress_bar
from .methods import ResolvedMethod, masked_parameters, resolve_method, wrap_model
from .methods.kss import attach_kss
from .models import check_max_length, load_tokenizer, resolve_device
from .precision.runtime import PrecisionRuntime
from .run_records import _failure, default_run_dir, new_result, record_prepare_failure
from .run_result import DIVERGED_PREFIX, RunResult
from .rundir import RunDirectory
from .tasks import EvalOutput, Task, make_task
from .tasks.classification import Batches, collate, mean_loss, predict_logits, tokenize
from .variants import RunVariant, grow_rank


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(
    task: Task,
    tokenizer: Any,
    method: ResolvedMethod,
    *,
    precision: PrecisionRuntime,
    device: torch.device,
    dist: DistContext,
    extra_classes: int = 0,
    initial_adapter: torch.nn.Module | None = None,
) -> torch.nn.Module:
    """The model a run trains: the task's base model, precision hooks, the method's adapter, and (FSDP2)
    sharded. ``extra_classes`` widens a classifier; ``initial_adapter`` is a trained model to start from."""
    base = task.build_model(tokenizer, extra_classes=extra_classes)
    check_max_length(base, task.cfg.model.max_length)  # before the run directory exists: a one-line error
    # FSDP2 moves the weights to the device one block at a time while sharding them, so a rank never
    # holds the whole model there; everything else goes to the device now.
    place = device if dist.fsdp is None else torch.device("cpu")
    base = precision.before_adapters(base.to(place))
    wrapped = wrap_model(base, method, task_type=task.peft_task_type).to(place)
    model = precision.after_adapters(wrapped)
    if initial_adapter is not None:
        grow_rank(model, initial_adapter)
    if dist.fsdp is not None:
        # Before sharding: each rank's shards are cut from its own full copy.
        dist.broadcast_params([p for p in model.parameters() if p.requires_grad], device=device)
        model = shard_model(model, dist.world_size, device, dist.fsdp)
    return model


@dataclass
class _Optimisation:
    """What the training step needs besides the model: parameters, optimizer, schedule, KSS mask."""

    named: dict[str, torch.nn.Parameter]
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    kss: Any
    masker: Any
    micro: int
    steps_per_epoch: int
    total: int


class Run:
    """Everything one run needs, prepared before the run directory exists (so bad input leaves nothing).

    Keyword arguments make a variant of the configured run (see :class:`kss_lora.variants.RunVariant`):
    a training subset (``train_index``), relabelled targets (``train_labels``), ``extra_classes``, an
    ``initial_adapter`` to continue from, a ``checkpoints_per_epoch`` schedule, capped ``eval_examples``.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        train_index: Any = None,
        train_labels: Any = None,
        extra_classes: int = 0,
        initial_adapter: torch.nn.Module | None = None,
        checkpoints_per_epoch: int | None = None,
        eval_examples: int | None = None,
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.variant = RunVariant(
            train_index=None if train_index is None else np.asarray(train_index, dtype=np.int64),
            train_labels=None if train_labels is None else np.asarray(train_labels, dtype=np.int64),
            extra_classes=int(extra_classes),
            initial_adapter=initial_adapter,
            checkpoints_per_epoch=checkpoints_per_epoch,
            eval_examples=eval_examples,
        ).validate(cfg.model.task)
        self.cfg = cfg
        self.method: ResolvedMethod = resolve_method(cfg.method)
        self.on_metrics = on_metrics  # e.g. kss_lora.lab.tracking.metrics_stream: each metrics line as written
        self.resumed_from_step: int | None = None
        self._best: dict[str, torch.Tensor] | None = None
        self.t0 = time.time()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.dist: DistContext = init_distributed(cfg.launcher, cfg.train.device)
        check_loop_options(cfg, sharded=self.dist.fsdp is not None)
        self.device = self._device(cfg.train.device)
        self.task: Task = make_task(cfg)
        self.task.load_data()
        seed_everything(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
        self.precision = PrecisionRuntime(cfg.precision, self.device)
        self.model = build_model(
            self.task,
            self.tokenizer,
            self.method,
            precision=self.precision,
            device=self.device,
            dist=self.dist,
            extra_classes=self.variant.extra_classes,
            initial_adapter=initial_adapter,
        )
        self.task.tokenize(self.tokenizer)
        self.recorder: DynamicsRecorder | None = None
        self._apply_variant()

    def _apply_variant(self) -> None:
        v = self.variant
        self.full_train_batches = self.task.train_batches  # before any subset: detection scores held-out rows
        if v.train_index is not None or v.train_labels is not None:
            self.task.restrict(v.train_index, v.train_labels)
        if v.eval_examples is not None:
            self.task.cap_evaluation(v.eval_examples)
        every = v.every_steps(len(self.task.train_batches), self.cfg.train.batch_size)
        if every is not None and self.cfg.tracking.per_example:
            self.cfg = copy.deepcopy(self.cfg)  # the caller's config stays as it was
            self.cfg.tracking.every_steps = every

    def _device(self, wanted: str) -> torch.device:
        # One GPU per data-parallel process; a device this machine lacks is a ConfigError before anything is written.
        return resolve_device(wanted, local_rank=self.dist.local_rank if self.dist.enabled else None)

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
        return default_run_dir(self.cfg, self.method)

    # ------------------------------------------------------------------------------------------------
    def evaluate_split(self, batches: Any, rows: np.ndarray | None = None) -> EvalOutput:
        """Eval-mode outputs for a whole split (or its ``rows``, in that order); sharded over data-parallel
        ranks and gathered on all."""
        rows = np.arange(len(batches)) if rows is None else np.asarray(rows)
        n = len(rows)
        local, real = self.dist.padded_shard(np.arange(n))  # positions in rows
        out = self.task.evaluate(
            self.model,
            batches,
            rows[local],
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

    def checkpoint(self, step: int, *, whole: bool = True) -> EvalOutput:
        """Eval-mode outputs over the training set, recorded as a dynamics checkpoint when tracking is on.
        ``whole=False`` (between epoch ends) evaluates only the rows recorded (``tracking.train_role``)."""
        rows = self.task.tracked_rows() if self.recorder is not None else None
        out = self.evaluate_split(self.train_batches, None if whole else rows)
        if self.recorder is not None:
            heldout = self.evaluate_split(self.heldout_batches).record if self.heldout_batches is not None else None
            self.recorder.record_checkpoint(
                step, out.record if rows is None or not whole else out.record[rows], heldout
            )
        return out

    def epoch_metrics(self, epoch: int, step: int, running: float, *, record: bool = True) -> dict[str, Any]:
        """An epoch row; ``record`` also makes it a dynamics checkpoint (off for a restored best adapter)."""
        train_out = self.checkpoint(step) if record else self.evaluate_split(self.train_batches)
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

    def _optimisation(self) -> _Optimisation:
        tc, dist = self.cfg.train, self.dist
        named = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        params = list(named.values())
        if dist.fsdp is None:
            dist.broadcast_params(params)  # FSDP2: done before sharding
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        steps_per_epoch = math.ceil(len(self.train_batches) / tc.batch_size)
        total = min(tc.epochs * steps_per_epoch, tc.max_steps or 10**12)
        from transformers import get_scheduler

        sched_name = "constant_with_warmup" if tc.scheduler == "constant" else tc.scheduler
        scheduler = get_scheduler(
            sched_name, optimizer, num_warmup_steps=int(tc.warmup_ratio * total), num_training_steps=total
        )
        kss = self.method.kss_config(tc.seed)
        masker = None
        if self.method.masked and kss is not None:
            masker = attach_kss(self.model, optimizer, kss, params=masked_parameters(self.model, self.method))
        return _Optimisation(
            named, params, optimizer, scheduler, kss, masker, tc.batch_size // tc.grad_accum, steps_per_epoch, total
        )

    def train(self, directory: RunDirectory | Path, *, resume: bool = False) -> dict[str, Any]:
        """The epoch loop: a permutation per epoch, a :meth:`step` per global batch, metrics at epoch ends (and
        every ``train.eval_every_steps``), a checkpoint every ``train.checkpoint_every`` steps; ``resume``
        continues from the run directory's checkpoint instead of step 0."""
        run_dir = directory if isinstance(directory, RunDirectory) else RunDirectory(directory)
        cfg, tc, dist = self.cfg, self.cfg.train, self.dist
        opt = self._optimisation()
        track = cfg.tracking
        if track.per_example:
            self.recorder = DynamicsRecorder(steps_per_epoch=opt.steps_per_epoch, **self.task.recorder_kwargs())
            self.checkpoint(0)
        # Re-seed here too: dropout draws from the global RNG, and whatever ran between preparation and
        # training (another run, a test) must not change this run's numbers.
        seed_everything(tc.seed)
        order_gen = np.random.default_rng(tc.seed)  # the same permutation on every rank
        loop, self._best = LoopState(), None
        if resume:
            saved, self._best = restore_training_state(run_dir, self.model, opt.optimizer, opt.scheduler, opt.masker)
            loop = LoopState.from_json(saved)
            if dist.is_main:
                run_dir.keep_metrics_lines(loop.metrics_lines)  # what comes after the checkpoint is written again
            self.t0 = time.time() - loop.elapsed_s
            self.resumed_from_step = loop.step
        bar = progress_bar(opt.total, enabled=tc.progress and dist.is_main, desc=self.method.label())
        bar.update(loop.step)
        lines = ProgressLine(opt.total, enabled=tc.progress and dist.is_main, t0=self.t0)
        n_train = len(self.train_batches)
        self.model.train()
        while loop.epoch <= tc.epochs and loop.step < opt.total and not loop.stopped_early:
            if loop.order_state is None:
                loop.order_state = order_gen.bit_generator.state
            order_gen.bit_generator.state = loop.order_state  # a resumed epoch draws its permutation again
            perm = order_gen.permutation(n_train)
            while loop.position < n_train and loop.step < opt.total:
                lr = float(opt.optimizer.param_groups[0]["lr"])
                loss_sum, n_examples = self.step(
                    opt, perm[loop.position : loop.position + tc.batch_size], loop.step, loop.epoch
                )
                loop.running_sum += loss_sum
                loop.running_n += n_examples
                loop.step += 1
                loop.position += tc.batch_size
                step_loss = loss_sum / max(n_examples, 1)
                loop.check_divergence(step_loss, loop.step)
                bar.update(1)
                bar.set_postfix(loss=f"{loop.running_loss:.4f}", epoch=loop.epoch)
                lines.update(loop.step, loop.epoch, loop.running_loss)
                if tc.log_every_steps and loop.step % tc.log_every_steps == 0:
                    self._emit(
                        run_dir,
                        loop,
                        {"kind": "step", "epoch": loop.epoch, "step": loop.step, "loss": step_loss, "lr": lr},
                    )
                ends_epoch = loop.position >= n_train or loop.step >= opt.total
                if not ends_epoch and track.every_steps and loop.step % track.every_steps == 0:
                    self.checkpoint(loop.step, whole=False)
                if not ends_epoch and tc.eval_every_steps and loop.step % tc.eval_every_steps == 0:
                    self._evaluate_val(run_dir, loop)
                if tc.checkpoint_every and loop.step % tc.checkpoint_every == 0:
                    self._save_checkpoint(run_dir, opt, loop)
                if loop.stopped_early:
                    break
            row = self.epoch_metrics(loop.epoch, loop.step, loop.running_loss)
            row["time_s"] = round(time.time() - self.t0, 2)
            self._check_evaluation(loop, row)
            self._emit(run_dir, loop, row)
            loop.history.append(row)
            if not loop.stopped_early:
                self._evaluated(loop, row["val_loss"])
            loop.epoch, loop.position, loop.order_state = loop.epoch + 1, 0, None
            loop.running_sum = loop.running_n = 0.0
        bar.close()
        final_row, restored = loop.history[-1], False
        if tc.restore_best and self._best is not None and loop.best_step != loop.step:
            load_trainable_state(self.model, self._best)
            final_row, restored = self.epoch_metrics(loop.best_epoch, loop.best_step, float("nan"), record=False), True
        out: dict[str, Any] = {"history": [final_row], "steps": loop.step, "kss": opt.kss, "loop": loop}
        out["restored_best"] = restored if tc.restore_best else None
        if dist.enabled:
            out["distributed"] = self._check_ranks_agree(opt.masker, opt.named, loop.step)
        if opt.masker is not None:
            opt.masker.detach()
        if self.recorder is not None:
            self._gather_free_records()
            if dist.is_main:
                self.recorder.save(run_dir.path)
        return out

    def _emit(self, run_dir: RunDirectory, loop: LoopState, row: dict[str, Any]) -> None:
        """One metrics.jsonl line (rank 0), also to the streaming callback; a failing callback never fails a run."""
        loop.metrics_lines += 1
        if not self.dist.is_main:
            return
        run_dir.append_metrics(row)
        if self.on_metrics is not None:
            try:
                self.on_metrics(row)
            except Exception as exc:  # noqa: BLE001 - a tracker is a mirror, the run directory is the record
                print(f"warning: streaming metrics failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _check_evaluation(self, loop: LoopState, row: dict[str, Any]) -> None:
        if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss") if k in row):
            raise TrainingDiverged(f"{DIVERGED_PREFIX}evaluation loss is not finite at step {loop.step}: {row}")
        loop.check_val_divergence(row["val_loss"])

    def _evaluate_val(self, run_dir: RunDirectory, loop: LoopState) -> None:
        """A validation evaluation between epoch ends (``train.eval_every_steps``): a kind-eval metrics line."""
        val = self.task.split_metrics("val", self.evaluate_split(self.val_batches))
        row = {"kind": "eval", "epoch": loop.epoch, "step": loop.step, **val, "time_s": round(time.time() - self.t0, 2)}
        self._check_evaluation(loop, row)
        self._emit(run_dir, loop, row)
        self._evaluated(loop, row["val_loss"])

    def _evaluated(self, loop: LoopState, val_loss: float) -> None:
        best, _ = loop.evaluated(val_loss, self.cfg.train.early_stopping_patience)
        if best and self.cfg.train.restore_best:
            self._best = trainable_state(self.model)

    def _save_checkpoint(self, run_dir: RunDirectory, opt: _Optimisation, loop: LoopState) -> None:
        loop.elapsed_s = time.time() - self.t0
        if self.dist.is_main:
            save_training_state(
                run_dir,
                self.model,
                opt.optimizer,
                opt.scheduler,
                opt.masker,
                loop.to_json(),
                self.cfg.run_id(),
                self._best,
            )

    def step(self, opt: _Optimisation, batch_idx: np.ndarray, step: int, epoch: int) -> tuple[float, float]:
        """One optimizer step on a global batch; returns (summed loss, examples) over every rank.

        Data-parallel: each rank takes its shard of the batch (FSDP2 pads shards to equal length with
        passes that contribute nothing), gradients are summed across ranks before clipping, and a non-finite
        loss is raised on every rank together so that no rank waits forever in a collective.
        """
        dist, tc, track = self.dist, self.cfg.train, self.cfg.tracking
        local, n_real = dist.padded_shard(batch_idx)
        local_sum, bad = 0.0, 0.0
        for m_start in range(0, len(local), opt.micro):
            index = local[m_start : m_start + opt.micro]
            real = min(len(index), max(n_real - m_start, 0))  # FSDP2 pads the last ones of a rank
            if dist.fsdp is not None:  # reduce-scatter once per step, on the last micro-batch
                self.model.set_requires_gradient_sync(m_start + opt.micro >= len(local))
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
                bad = 1.0
                if dist.fsdp is None:  # FSDP2 must still run every rank's remaining passes
                    break
            (loss * real / len(batch_idx)).backward()
            local_sum += loss.item() * real
        summed = dist.all_reduce_grads(opt.params, torch.tensor([local_sum, float(n_real), bad]))
        if dist.enabled and summed[2] > 0:
            raise TrainingDiverged(f"loss became non-finite at step {step}, epoch {epoch}")
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(opt.params, tc.grad_clip)
        opt.optimizer.step()
        opt.scheduler.step()
        opt.optimizer.zero_grad(set_to_none=True)
        if dist.enabled:
            return float(summed[0]), float(summed[1])
        return local_sum, float(len(local))

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

    def execute(self, directory: Path | None = None, *, resume: bool = False) -> dict[str, Any]:
        """Train, evaluate and write the run directory; returns result.json's content (never raises for
        training failures: they are recorded with ``status: failed``). With data-parallel processes every
        rank trains and returns the result; only rank 0 writes. Raises :class:`~kss_lora.errors.ConfigError`
        before anything is written when ``directory`` holds files kss did not write. ``resume``: continue
        from the directory's checkpoint (checked by :func:`~kss_lora.checkpoints.check_resume`), keeping its files."""
        run_dir = RunDirectory(directory if directory is not None else self.run_dir())
        main = self.dist.is_main
        if main and not resume:
            run_dir.create()
            run_dir.write_config(to_yaml(self.cfg, self.method))
            run_dir.write_env()
            self.task.save_extra(run_dir.path)
        self.t0 = time.time()
        result = self.base_result()
        try:
            out = self.train(run_dir, resume=resume)
            result.update(self.final_metrics(out["history"]))
            result.steps, result.status = out["steps"], "ok"
            result.distributed = out.get("distributed")
            loop = out["loop"]
            result.stopped_early, result.best_epoch = loop.stopped_early, loop.best_epoch
            result.restored_best, result.resumed_from_step = out["restored_best"], self.resumed_from_step
            if self.cfg.output.save_adapter:
                # FSDP2: every rank takes part in gathering the trainable tensors; rank 0 writes them.
                state = full_trainable_state(self.model) if self.dist.fsdp is not None else None
                if main:
                    self.save(run_dir.adapter, out["kss"], state)
        except Exception as exc:  # recorded, not raised: a sweep goes on after a failed run
            if main:
                run_dir.write_error(traceback.format_exc())
            else:  # only rank 0 writes files: another rank's failure goes to its stderr
                print(f"[rank {self.dist.rank}] {traceback.format_exc()}", file=sys.stderr)
            result.status, result.error = "failed", _failure(exc)
        result.wall_time_s = round(time.time() - self.t0, 2)
        if main:
            run_dir.write_result(result)
            if result.status == "ok":
                run_dir.remove_checkpoint()  # a finished run is not resumed
        return result.to_dict()

    def base_result(self) -> RunResult:
        return new_result(self.cfg, self.method, self.task)

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


def run(cfg: RunConfig, directory: str | Path | None = None, *, resume: bool = False, **variant: Any) -> dict[str, Any]:
    """Prepare (raising :class:`KSSError` on bad input, before anything is written) and execute one run.

    ``resume``: continue the run in ``directory`` from its checkpoint (same config, else ConfigError).
    ``variant``: keyword arguments of :class:`Run` (a training subset, relabelled targets, ``on_metrics``...).
    """
    target = Path(directory) if directory is not None else default_run_dir(cfg)
    if resume:
        check_resume(cfg, target)
    else:
        RunDirectory(target).check_replaceable()  # before the minutes of preparation, on every rank
    prepared = Run(cfg, **variant)
    return prepared.execute(target, resume=resume)


__all__ = [
    "Batches",
    "KSSError",
    "Run",
    "RunVariant",
    "build_model",
    "collate",
    "mean_loss",
    "new_result",
    "predict_logits",
    "record_prepare_failure",
    "run",
    "tokenize",
]
