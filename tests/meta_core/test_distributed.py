"""Data-parallel meta-training on the CPU with gloo: two processes give the meta-update of one
process with the whole meta-batch, and ``torchrun --nproc_per_node 2 meta-core train`` runs,
checkpoints, resumes and is reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from meta_core import distributed
from meta_core.algorithms import MetaLearner
from meta_core.config import AlgorithmConfig, RandomImagesFamily
from meta_core.networks import build_network
from meta_core.tasks import TaskBatch, build_family
from tests.utils.server import free_port

ROOT = Path(__file__).resolve().parents[2]
CONV = {"type": "conv4", "in_channels": 1, "image_size": 28, "hidden": 8, "out_features": 5}
ALGO = AlgorithmConfig(inner_steps=2, inner_lr=0.4, lslr=True)  # learned rates too


def setup(meta_batch: int) -> tuple[MetaLearner, torch.optim.Optimizer, TaskBatch]:
    # float64: the comparison is of the reduction, not of float32's summation order (Adam
    # divides by the gradient's own scale, so one rounding difference would show).
    torch.manual_seed(0)
    learner = MetaLearner.create(build_network(CONV).double(), "classification", ALGO)
    opt = torch.optim.Adam(learner.meta_parameters(), lr=1e-3)
    family = build_family(RandomImagesFamily(ways=5, shots=1, queries=2, classes=20))
    b = family.sample(meta_batch, torch.Generator().manual_seed(1))
    return learner, opt, TaskBatch(b.support_x.double(), b.support_y, b.query_x.double(), b.query_y)


def part(batch: TaskBatch, start: int, stop: int) -> TaskBatch:
    return TaskBatch(
        *(t[start:stop] for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
    )


def update(learner: MetaLearner, opt: torch.optim.Optimizer, batch: TaskBatch, world, total):
    """One meta-update as ``Run.step`` makes it (the same calls in the same order)."""
    loss, _ = learner.meta_loss(batch, strategy="loop")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if world.distributed:
        distributed.reduce_gradients(learner.meta_parameters(), len(batch) / total)
    torch.nn.utils.clip_grad_norm_(learner.meta_parameters(), 10.0)
    opt.step()


def rank_main(rank: int, size: int, port: int, meta_batch: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size
    )
    try:
        world = distributed.World(rank, size)
        learner, opt, batch = setup(meta_batch)
        start = sum(distributed.World(r, size).share(meta_batch) for r in range(rank))
        mine = part(batch, start, start + world.share(meta_batch))
        for _ in range(2):  # two steps: Adam's state must agree as well
            update(learner, opt, mine, world, meta_batch)
        distributed.check_identical(learner.meta_parameters(), rank)
        if rank == 0:
            named = {f"p{i}": p.detach() for i, p in enumerate(learner.meta_parameters())}
            save_file(named, out)
        distributed.wait_for_all(world)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    # As meta-core train ends its ranks: gloo's teardown at exit aborts a process now and then
    # (torch 2.13, "terminate called without an active exception"), after all its work.
    os._exit(0)


@pytest.mark.parametrize("meta_batch", [4, 5])  # an even split, and 3 + 2 tasks
def test_two_processes_give_the_update_of_one_with_the_whole_meta_batch(tmp_path, meta_batch):
    out = tmp_path / "two.safetensors"
    mp.spawn(rank_main, args=(2, free_port(), meta_batch, str(out)), nprocs=2, join=True)
    learner, opt, batch = setup(meta_batch)
    for _ in range(2):
        update(learner, opt, batch, distributed.World(), meta_batch)
    two = load_file(str(out))
    for i, p in enumerate(learner.meta_parameters()):
        torch.testing.assert_close(two[f"p{i}"], p.detach(), rtol=1e-10, atol=1e-12)


def test_shares_and_seeds():
    assert [distributed.World(r, 3).share(8) for r in range(3)] == [3, 3, 2]
    assert distributed.World().share(8) == 8 and distributed.World().seed(5) == 5
    assert len({distributed.World(r, 4).seed(0) for r in range(4)}) == 4
    with pytest.raises(ValueError, match="smaller than the 3 processes"):
        distributed.World(0, 3).share(2)


TINY = [
    "train.iterations=12",
    "train.val_every=6",
    "train.val_tasks=10",
    "train.log_every=3",
    "train.checkpoint_every=6",
    "train.meta_batch=4",
    "algorithm.inner_steps=2",
    "algorithm.lslr=true",
    "train.compile=false",
    "train.threads=1",
]


def torchrun(
    out: Path, *extra: str, processes: int = 2, preset: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "meta_core.cli",
        "train",
        "--out",
        str(out),
        "--no-progress",
        *(["--preset", "sinusoid", *[a for s in TINY for a in ("--set", s)]] if preset else []),
        *extra,
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_trains_checkpoints_resumes_and_is_reproducible(tmp_path: Path):
    done = torchrun(tmp_path / "a")
    assert done.returncode == 0, done.stderr[-3000:]
    again = torchrun(tmp_path / "b")
    assert again.returncode == 0, again.stderr[-3000:]
    a = load_file(str(tmp_path / "a" / "weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["processes"] == 2 and state["iteration"] == 12
    tensors = load_file(str(tmp_path / "a" / "checkpoint" / "state.safetensors"))
    assert not torch.equal(tensors["rng"], tensors["rng.1"])  # each rank its own tasks
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r["iteration"] for r in rows if r["event"] == "train"]
    assert train_rows == [3, 6, 9, 12]  # logged once, by rank 0
    # A schedule in windows: stop at 6, resume with as many processes, end where one pass
    # ends (each rank's random stream and Adam's state restored).
    cut = torchrun(tmp_path / "cut", "--set", "train.stop_after=6")
    assert cut.returncode == 0, cut.stderr[-3000:]
    assert (
        json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["iteration"] == 6
    )
    resumed = torchrun(tmp_path / "cut", "--resume", preset=False)  # the run's own config
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = load_file(str(tmp_path / "cut" / "weights.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    changed = torchrun(tmp_path / "cut", "--resume", "--set", "train.meta_batch=6")
    assert changed.returncode != 0 and "another configuration" in changed.stderr
    alone = [sys.executable, "-m", "meta_core.cli", "train", "--preset", "sinusoid"]
    alone += ["--out", str(tmp_path / "cut"), "--resume", "--no-progress"]
    alone += [a for s in TINY for a in ("--set", s)]
    one = subprocess.run(alone, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert one.returncode != 0 and "made by 2 processes" in one.stderr
