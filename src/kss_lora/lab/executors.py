"""Where a sweep's runs execute: in this process, a local process pool, Ray, or Slurm (via submitit).

Every executor has the same shape, ``map_unordered(fn, tasks) -> (task, result | exception)`` in completion
order, so the sweep's bookkeeping (skip finished, record failures, progress) is written once. ``fn`` never
raises for a bad run (it records the failure); an exception here means the worker itself died (killed,
out of memory, node lost), and the sweep leaves that run unfinished so the next ``kss sweep`` redoes it.

- ``sequential`` (default): one run after another in this process. Simplest to debug.
- ``local``: a process pool, one worker per visible GPU (each worker sees one GPU) or, on CPU, ``workers``
  processes sharing the cores (torch threads per worker = cores // workers unless the config sets
  ``train.threads``). Workers die with the sweep (Linux ``PR_SET_PDEATHSIG``), so a ``kill -9`` of the
  sweep leaves no orphan writing into a run directory the next sweep will redo.
- ``ray`` (extra ``ray``): Ray tasks with ``num_gpus``/``num_cpus`` resources. ``executor_options``:
  ``address`` (default: start a local instance), ``num_cpus``, ``num_gpus`` per task, ``init`` (more
  ``ray.init`` kwargs).
- ``slurm`` (extra ``slurm``): a submitit job array. ``executor_options``: ``cluster`` (``slurm``, or
  ``local``/``debug`` to try it on one machine), ``folder`` (logs; default ``<runs_dir>/.submitit``),
  ``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ... (passed to
  ``update_parameters``), ``poll_s``. Run directories must be on a filesystem the nodes share.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import ConfigError, KSSError

EXECUTORS = ("sequential", "local", "ray", "slurm")
Outcome = Any  # a result dict, or the exception that killed the worker


def map_unordered(
    fn: Callable[[Any], Any],
    tasks: list[Any],
    *,
    executor: str = "sequential",
    workers: int | None = None,
    options: dict[str, Any] | None = None,
) -> Iterator[tuple[Any, Outcome]]:
    """Apply ``fn`` to every task on the named executor, yielding ``(task, outcome)`` as runs finish."""
    if not tasks:
        return iter(())
    options = dict(options or {})
    if executor == "sequential":
        return _sequential(fn, tasks)
    if executor == "local":
        return _local(fn, tasks, workers or default_workers())
    if executor == "ray":
        return _ray(fn, tasks, workers, options)
    if executor == "slurm":
        return _slurm(fn, tasks, workers, options)
    raise ConfigError("sweep.executor", f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")


def _sequential(fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[Any, Outcome]]:
    for task in tasks:
        yield task, fn(task)


# ----------------------------------------------------------------------------- local process pool


def visible_gpus() -> list[str]:
    """GPU ids this process may use (honours CUDA_VISIBLE_DEVICES); empty on a CPU machine."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() not in ("", "-1")]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def default_workers() -> int:
    """One worker per visible GPU, else one per CPU core."""
    return len(visible_gpus()) or (os.cpu_count() or 1)


def _init_worker(gpu_queue: Any, threads: int, defer_torchao: bool = False) -> None:
    """Runs first in each worker: pin one GPU (before torch initialises CUDA), size the CPU thread pool,
    and ask Linux to kill this worker when the sweep process dies. A worker of the ``kss`` command keeps
    torchao off its default path as the command does (:mod:`kss_lora.optional_imports`)."""
    _die_with_parent()
    if defer_torchao:
        from ..optional_imports import defer_torchao as defer

        defer()
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_queue.get()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers may outlive a killed sweep
        pass


def _local(fn: Callable[[Any], Any], tasks: list[Any], workers: int) -> Iterator[tuple[Any, Outcome]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after torch has threads is unsafe
    gpus = visible_gpus()
    workers = max(1, min(workers, len(tasks)))
    gpu_queue = None
    if gpus:
        workers = min(workers, len(gpus))
        gpu_queue = ctx.Manager().Queue()
        for g in gpus[:workers]:
            gpu_queue.put(g)
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending = list(tasks)
    while pending:
        # Keep at most `workers` runs in flight so a pool that breaks (a worker killed) loses only those.
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(gpu_queue, threads, "torchao" in sys.modules and sys.modules["torchao"] is None),
        )
        in_flight: dict[Future, Any] = {}
        broken = False
        try:
            while pending or in_flight:
                while pending and len(in_flight) < workers and not broken:
                    task = pending.pop(0)
                    in_flight[pool.submit(fn, task)] = task
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = in_flight.pop(fut)
                    try:
                        yield task, fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        yield task, exc
                    except Exception as exc:  # noqa: BLE001 - reported as a lost run
                        yield task, exc
                if broken and not in_flight:
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if gpu_queue is not None and broken:  # a fresh pool needs its GPU ids back
            while not gpu_queue.empty():
                gpu_queue.get()
            for g in gpus[:workers]:
                gpu_queue.put(g)


# ----------------------------------------------------------------------------- ray


def _ray(
    fn: Callable[[Any], Any], tasks: list[Any], workers: int | None, options: dict[str, Any]
) -> Iterator[tuple[Any, Outcome]]:
    try:
        import ray
    except ImportError:
        raise KSSError("executor ray needs the ray extra: pip install 'kss-lora[ray]'") from None
    started = False
    if not ray.is_initialized():
        init = dict(options.get("init") or {})
        if options.get("address"):
            init["address"] = options["address"]
        elif workers and "num_cpus" not in init:
            init["num_cpus"] = workers * int(options.get("num_cpus", 1))
        init.setdefault("include_dashboard", False)
        init.setdefault("log_to_driver", False)
        ray.init(**init)
        started = True
    gpus_per_task = options.get("num_gpus")
    if gpus_per_task is None:
        gpus_per_task = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(num_cpus=options.get("num_cpus", 1), num_gpus=gpus_per_task, max_retries=0)(fn)
    try:
        refs = {remote.remote(task): task for task in tasks}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                task = refs.pop(ref)
                try:
                    yield task, ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - worker crash, node lost
                    yield task, exc
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- slurm (submitit)


def _slurm(
    fn: Callable[[Any], Any], tasks: list[Any], workers: int | None, options: dict[str, Any]
) -> Iterator[tuple[Any, Outcome]]:
    try:
        import submitit
    except ImportError:
        raise KSSError("executor slurm needs the slurm extra: pip install 'kss-lora[slurm]'") from None
    opts = dict(options)
    cluster = opts.pop("cluster", None)
    poll_s = float(opts.pop("poll_s", 5.0))
    folder = opts.pop("folder", None) or os.path.join(os.path.dirname(tasks[0].directory), ".submitit")
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": 240, "name": "kss-sweep"}
    if workers:
        params["slurm_array_parallelism"] = workers
    params.update(opts)
    ex.update_parameters(**params)
    jobs = ex.map_array(fn, tasks)
    pending = dict(zip(jobs, tasks))
    while pending:
        finished = [j for j in pending if j.done()]
        if not finished:
            time.sleep(poll_s)
            continue
        for job in finished:
            task = pending.pop(job)
            try:
                yield task, job.result()
            except Exception as exc:  # noqa: BLE001 - job killed, timed out, node failure
                yield task, exc
