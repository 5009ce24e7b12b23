"""Meta-training: meta-batches, Adam on the meta-parameters, validation, checkpoints, artifact.

The run directory holds ``metrics.jsonl`` (one JSON line per log interval and validation),
``checkpoint/`` (:mod:`meta_core.checkpoint`, every ``checkpoint_every`` iterations and on
Ctrl-C) and, at the end, the artifact of the best validated meta-parameters.
``--resume`` continues from the checkpoint with the same random stream, so an interrupted run
ends where an uninterrupted one would. ``train.init_from`` starts instead from an artifact's
meta-parameters (a warm restart: fresh Adam state and schedule), so separate budgets add up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import torch
from torch import Tensor
from tqdm import tqdm

from meta_core import checkpoint, distributed
from meta_core.algorithms import (
    MetaLearner,
    choose_strategy,
    cosine_lr,
    first_order_at,
    multi_step_weights,
)
from meta_core.artifact import (
    TrainingRecord,
    WarmStart,
    inner_loop_spec,
    load_artifact,
    save_artifact,
)
from meta_core.checkpoint import RunState, snapshot
from meta_core.config import Config, TrainConfig, architecture
from meta_core.evaluate import adaptation_curve
from meta_core.networks import Conv4Spec, MLPSpec, build_network
from meta_core.tasks import TaskBatch, build_family

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _join(tc: TrainConfig) -> tuple[distributed.World, torch.device]:
    """This process's thread count, its place in the run (one process, or a rank under
    ``torchrun``) and the device it trains on; ranks other than 0 log only warnings."""
    if tc.threads:
        torch.set_num_threads(tc.threads)
    world, device = distributed.init(tc.device)
    if not world.main:
        log.setLevel(logging.WARNING)  # rank 0 says it
    return world, resolve_device(device)


STOP_TIME, STOP_INTERRUPT = 1, 2  # why the loop stops early (the larger wins across ranks)


def train(
    cfg: Config,
    out: Path | str,
    *,
    resume: bool = False,
    progress: bool = True,
    leave_group: bool = True,
) -> Path:
    """Meta-train as ``cfg`` says and write the artifact into ``out``; return ``out``. Under
    ``torchrun`` each process is a rank of one data-parallel run (:mod:`meta_core.distributed`),
    and every rank returns once rank 0 has written everything; ``leave_group=False`` keeps the
    process group for a caller that ends the process at once (``meta-core train``)."""
    run = Run(cfg, Path(out), resume=resume)
    try:
        _loop(run, progress)
        run.finish()
        distributed.wait_for_all(run.world)
    finally:
        if leave_group:
            distributed.shutdown(run.world)
    return run.out


def _loop(run: Run, progress: bool) -> None:
    tc = run.cfg.train
    bar = run.progress_bar(progress and run.world.main)
    interrupt = _DeferredInterrupt()
    # Rank 0 logs; the others' lines would repeat its own.
    metrics_file = run.metrics_path if run.world.main else Path(os.devnull)
    try:
        with interrupt, metrics_file.open("a") as metrics:
            while run.state.iteration < tc.iterations:
                stop = run.stop_reason(interrupt.requested)
                if stop == STOP_INTERRUPT:
                    run.save_checkpoint()
                    log.warning(
                        "interrupted at iteration %d; checkpoint saved: continue with --resume",
                        run.state.iteration,
                    )
                    raise KeyboardInterrupt
                if stop == STOP_TIME:
                    break
                loss, met = run.step()
                bar.update(1)
                done = run.state.iteration
                if done == 1 and tc.compile:
                    bar.set_description(run.cfg.name)
                if done % tc.log_every == 0 or done == tc.iterations:
                    rate = run.log_training(metrics, loss, met)
                    bar.set_postfix(loss=f"{loss.item():.4f}", tasks_s=f"{rate:.0f}")
                if done % tc.val_every == 0 or done == tc.iterations:
                    run.validate(metrics)
                if done % tc.checkpoint_every == 0:
                    metrics.flush()
                    run.save_checkpoint()
    finally:
        bar.close()


class Run:
    """One training run's pieces, each step of :func:`train` a named method."""

    def __init__(self, cfg: Config, out: Path, *, resume: bool) -> None:
        """Build the run's pieces, then restore its state from ``out``'s checkpoint
        (``resume``) or start it afresh."""
        tc = cfg.train
        self.cfg, self.out = cfg, out
        self.world, self.device = _join(tc)
        self.family = build_family(cfg.family).to(self.device)
        self.spec = architecture(cfg.model, self.family.input_shape, self.family.n_outputs)
        self.learner, self.strategy = self._build_learner()
        self.opt = torch.optim.Adam(
            self.learner.meta_parameters(), lr=tc.outer_lr, fused=tc.fused_adam or None
        )
        self.gen = torch.Generator().manual_seed(self.world.seed(tc.seed))
        self.local_batch = self.world.share(tc.meta_batch)
        self.val_batch = self._validation_tasks()
        out.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out / "metrics.jsonl"
        self.state, self.best = self._restore() if resume else self._start()
        if self.world.distributed:  # one start for all: rank 0's
            distributed.broadcast_parameters(self.learner.meta_parameters())
        self._log_start()
        self.meta_loss = self._meta_step()
        self.amp = autocast(self.device, tc.bf16)
        self.invoked = time.perf_counter()  # this invocation's window starts (max_seconds)
        self.started = self.invoked - self.state.elapsed  # the run's, across resumes
        self.window_start, self.window_iters = time.perf_counter(), 0

    def _build_learner(self) -> tuple[MetaLearner, str]:
        """The network, initialized from the run's seed, wrapped by the algorithm; and the
        strategy that batches its tasks (channels-last, when asked, needs the loop)."""
        tc = self.cfg.train
        torch.manual_seed(tc.seed)
        model = build_network(self.spec).to(self.device)
        learner = MetaLearner.create(model, self.family.kind, self.cfg.algorithm)
        strategy = choose_strategy(tc.strategy, self.spec.type, self.device)
        if tc.channels_last:
            if strategy == "vmap":
                raise ValueError(
                    'train.channels_last needs train.strategy = "loop": torch.func.vmap '
                    "does not support channels-last tensors"
                )
            channels_last(learner)
        return learner, strategy

    def _validation_tasks(self) -> TaskBatch | None:
        """The held-out tasks rank 0 validates on, from the seed after the run's; other
        ranks: none."""
        if not self.world.main:
            return None
        tc = self.cfg.train
        gen = torch.Generator().manual_seed(tc.seed + 1)
        return self.family.sample(tc.val_tasks, gen, split="val").to(self.device)

    def _restore(self) -> tuple[RunState, dict[str, Tensor]]:
        """Load the checkpoint into the learner, Adam and the random stream; drop the metrics
        lines written after it. It already holds a warm start's parameters."""
        state, best = checkpoint.load_checkpoint(
            self.out, self.cfg, self.learner, self.opt, self.gen, self.world
        )
        checkpoint.truncate_metrics(self.metrics_path, state.iteration)
        log.info("resumed %s at iteration %d", self.out, state.iteration)
        return state, best

    def _start(self) -> tuple[RunState, dict[str, Tensor]]:
        """A fresh state (from ``train.init_from``'s meta-parameters if given) and empty
        metrics; refuse to start over a checkpoint."""
        if checkpoint.exists(self.out):
            raise FileExistsError(
                f"{self.out} holds a checkpoint: pass --resume or choose a new --out"
            )
        state = RunState()
        if self.cfg.train.init_from:
            state.warm_start = warm_start(self.learner, self.spec, self.cfg.train.init_from)
        if self.world.main:
            self.metrics_path.write_text("")
        return state, {}

    def _log_start(self) -> None:
        tc = self.cfg.train
        log.info(
            "training %s on %s (%s, strategy %s%s, %d threads%s)",
            self.cfg.name,
            self.device,
            self.cfg.algorithm.name,
            self.strategy,
            " compiled" if tc.compile else "",
            torch.get_num_threads(),
            f"; {self.world.size} processes, {self.local_batch} tasks each"
            if self.world.distributed
            else "",
        )

    def _meta_step(self) -> Callable[..., tuple[Tensor, Tensor]]:
        """The learner's meta-loss, compiled when ``train.compile`` asks."""
        tc = self.cfg.train
        if not tc.compile:
            return self.learner.meta_loss
        log.info(
            "torch.compile: the first iteration compiles the meta-step "
            "(about a minute on a CPU) before training starts"
        )
        compiled: Callable[..., tuple[Tensor, Tensor]] = torch.compile(
            self.learner.meta_loss, mode=tc.compile_mode
        )
        return compiled

    def progress_bar(self, enabled: bool) -> tqdm[Any]:
        compiling = self.cfg.train.compile and self.state.iteration == 0
        return tqdm(
            total=self.cfg.train.iterations,
            initial=self.state.iteration,
            disable=not enabled,
            desc=f"{self.cfg.name} (compiling the meta-step)" if compiling else self.cfg.name,
            dynamic_ncols=True,
        )

    def stop_reason(self, interrupted: bool) -> int:
        """Why to stop before the next iteration (0: no reason), agreed by every rank."""
        reason = STOP_INTERRUPT if interrupted else STOP_TIME if self.out_of_time() else 0
        if self.world.distributed:
            reason = distributed.most(reason, str(self.device))
        return reason

    def out_of_time(self) -> bool:
        """Whether this invocation's window is over: its time budget (``max_seconds``) or its
        last iteration (``stop_after``)."""
        stop_after = self.cfg.train.stop_after
        if stop_after and self.state.iteration >= stop_after:
            log.info("stopping at iteration %d (train.stop_after)", self.state.iteration)
            return True
        budget = self.cfg.train.max_seconds
        if budget and time.perf_counter() - self.invoked > budget:
            log.info("time budget of %.0f s reached at iteration %d", budget, self.state.iteration)
            return True
        return False

    def step(self) -> tuple[Tensor, Tensor]:
        """One meta-update on a fresh meta-batch (Finn et al. 2017, algorithm 1, lines 3-10)."""
        cfg, it = self.cfg, self.state.iteration
        if cfg.train.cosine:
            lr = cosine_lr(cfg.train.outer_lr, cfg.train.min_outer_lr, it, cfg.train.iterations)
            for group in self.opt.param_groups:
                group["lr"] = lr
        weights = None
        if cfg.algorithm.multi_step_loss:
            weights = multi_step_weights(
                cfg.algorithm.inner_steps, it, cfg.algorithm.msl_iterations
            ).to(self.device)
        batch = self.family.sample(self.local_batch, self.gen).to(self.device)
        if cfg.train.channels_last:
            batch = batch.channels_last()
        first = first_order_at(cfg.algorithm, it)
        with self.amp:
            loss, met = self.meta_loss(
                batch, strategy=self.strategy, step_weights=weights, first_order=first
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world.distributed:  # the gradient of the mean over the whole meta-batch
            share = self.local_batch / cfg.train.meta_batch
            distributed.reduce_gradients(self.learner.meta_parameters(), share)
            loss, met = distributed.reduce_mean(torch.stack([loss, met]), share)
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.learner.meta_parameters(), cfg.train.grad_clip)
        self.opt.step()
        self.state.iteration += 1
        self.window_iters += 1
        return loss, met

    def log_training(self, metrics: IO[str], loss: Tensor, met: Tensor) -> float:
        """A ``train`` line in metrics.jsonl; returns the tasks/s since the last one."""
        now = time.perf_counter()
        rate = self.window_iters * self.cfg.train.meta_batch / (now - self.window_start)
        row = {
            "event": "train",
            "iteration": self.state.iteration,
            "loss": loss.item(),
            "metric": met.item(),
            "tasks_per_s": round(rate, 1),
            "outer_lr": self.opt.param_groups[0]["lr"],
            "elapsed_s": round(now - self.started, 2),
        }
        metrics.write(json.dumps(row) + "\n")
        self.window_start, self.window_iters = now, 0
        return rate

    def validate(self, metrics: IO[str]) -> None:
        """Validate on the held-out tasks; keep the best meta-parameters (rank 0)."""
        if self.val_batch is None:
            return
        done = self.state.iteration
        val_loss, val_metric = validate(self.learner, self.val_batch)
        if val_loss < self.state.best_val:
            self.state.best_val, self.state.best_iteration = val_loss, done
            self.best = snapshot(self.learner)
        row = {
            "event": "val",
            "iteration": done,
            "loss": val_loss,
            "metric": val_metric,
            "best_iteration": self.state.best_iteration,
        }
        metrics.write(json.dumps(row) + "\n")
        log.info(
            "iteration %d: validation loss %.4f metric %.4f (best %d)",
            done,
            val_loss,
            val_metric,
            self.state.best_iteration,
        )

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint, with every rank's random stream; under torchrun every
        rank first checks its parameters are rank 0's, bit for bit."""
        self.state.elapsed = time.perf_counter() - self.started
        rngs = [self.gen.get_state()]
        if self.world.distributed:
            distributed.check_identical(self.learner.meta_parameters(), self.world.rank)
            rngs = distributed.gather_states(rngs[0], str(self.device))
        if self.world.main:
            checkpoint.save_checkpoint(
                self.out, self.cfg, self.learner, self.opt, rngs, self.state, self.best
            )

    def finish(self) -> None:
        """Validate the final parameters if not yet done, checkpoint, write the artifact."""
        state = self.state
        if self.val_batch is not None and (
            not self.best or state.best_iteration != state.iteration
        ):
            val_loss, _ = validate(self.learner, self.val_batch)
            if val_loss < state.best_val or not self.best:
                state.best_val, state.best_iteration = val_loss, state.iteration
                self.best = snapshot(self.learner)
        self.save_checkpoint()
        if self.world.main:
            self.write_artifact()

    def write_artifact(self) -> None:
        cfg, state, best = self.cfg, self.state, self.best
        save_artifact(
            self.out,
            name=cfg.name,
            version=cfg.version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M%S"),
            architecture=self.spec,
            task_kind=self.family.kind,
            params={k[4:]: v for k, v in best.items() if k.startswith("net.")},
            lrs={k[3:]: v for k, v in best.items() if k.startswith("lr.")},
            inner_loop=inner_loop_spec(cfg),
            preprocessing=self.family.preprocessing,
            training=TrainingRecord(
                config=cfg,
                family=self.family.describe(),
                iterations_done=state.iteration,
                best_iteration=state.best_iteration,
                best_val_loss=state.best_val,
                seconds=round(state.elapsed, 1),
                warm_start=state.warm_start,
                device=str(self.device),
                strategy=self.strategy,
                threads=torch.get_num_threads(),
            ),
        )


def channels_last(learner: MetaLearner) -> None:
    """Every 4-d meta-parameter (the convolutions' weights) in channels-last layout, in place:
    the same values, strides NHWC."""
    with torch.no_grad():
        for name, p in learner.params.items():
            if p.dim() == 4:
                learner.params[name] = (
                    p.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
                )


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast of the meta-step on ``device`` (CUDA, or the CPU, where it is for tests:
    the meta-gradient stays within a tolerance of fp32's, tested), else nothing. The
    meta-parameters and Adam stay fp32; only the matmuls and convolutions run in bf16."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def warm_start(learner: MetaLearner, spec: MLPSpec | Conv4Spec, source: str) -> WarmStart:
    """Copy an artifact's meta-parameters into ``learner``; return its identity for the
    manifest. The architecture and every tensor's name and shape must match."""
    art = load_artifact(source)
    theirs = art.manifest.architecture
    if theirs != spec:
        raise ValueError(
            f"init_from {source}: architecture {theirs.model_dump()} differs from this run's "
            f"{spec.model_dump()}"
        )
    for mine, given, what in (
        (learner.params, art.params, "weights"),
        (learner.lrs, art.lrs, "lrs"),
    ):
        if {k: tuple(v.shape) for k, v in mine.items()} != {
            k: tuple(v.shape) for k, v in given.items()
        }:
            raise ValueError(f"init_from {source}: its {what} do not match this run's algorithm")
        with torch.no_grad():
            for k, v in mine.items():
                v.copy_(given[k])
    log.info("warm start from %s %s (%s)", art.name, art.version, art.manifest.content_hash)
    return WarmStart(
        path=str(source),
        name=art.name,
        version=art.version,
        content_hash=art.manifest.content_hash,
    )


class _DeferredInterrupt:
    """The first Ctrl-C stops training at the end of the current iteration, which is then
    checkpointed, so nothing is lost; a second one stops at once, and the last periodic
    checkpoint (at most ``checkpoint_every`` iterations old) is what ``--resume`` finds."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this iteration (again to stop at once)")

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def validate(learner: MetaLearner, batch: TaskBatch) -> tuple[float, float]:
    """Mean query loss and metric on held-out tasks after the training number of steps."""
    steps = learner.algo.inner_steps
    losses, metrics = adaptation_curve(
        learner.model,
        learner.params,
        batch,
        kind=learner.kind,
        steps=steps,
        lr=learner.inner_lr(),
        adapt_names=learner.adapt_names,
    )
    return losses[:, steps].mean().item(), metrics[:, steps].mean().item()
