"""Data-parallel meta-training over processes: ``torchrun --nproc_per_node N meta-core train``.

Each rank meta-trains on its share of the meta-batch (its own tasks, from its own random
stream: the seed plus ``RANK_SEED`` times its rank), and the ranks sum their meta-gradients
weighted by their share, so every rank applies the gradient of the mean over the whole
meta-batch, learned inner learning rates included, and holds identical parameters (checked
at every checkpoint). The all-reduce is explicit: DDP's gradient hooks do not support the
double backward of second-order MAML. Only rank 0 validates, logs and writes checkpoints and
artifacts; each rank's random stream is saved in the checkpoint, so a resumed run with the
same number of processes continues exactly.

Backends: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU (what the
tests run). A single process (no ``WORLD_SIZE`` above 1) uses none of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

RANK_SEED = 1_000_003  # rank r samples its tasks from seed + r * RANK_SEED


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this rank validates, logs and writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, meta_batch: int) -> int:
        """This rank's tasks of a meta-batch: as even a split as there is."""
        if meta_batch < self.size:
            raise ValueError(
                f"train.meta_batch {meta_batch} is smaller than the {self.size} processes: "
                "each needs at least one task"
            )
        return meta_batch // self.size + (self.rank < meta_batch % self.size)

    def seed(self, seed: int) -> int:
        """This rank's seed for sampling tasks (rank 0's is the run's, as in one process)."""
        return seed + self.rank * RANK_SEED


def init(device: str) -> tuple[World, str]:
    """The world torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), its process
    group started, and the device this rank trains on (``cuda:LOCAL_RANK`` when training on
    CUDA); one process: the world of one and ``device`` unchanged."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(rank, size, local), device


def wait_for_all(world: World) -> None:
    """Return once every rank is here (after a run that ended normally: rank 0 has written
    its checkpoint and artifact)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()


def shutdown(world: World) -> None:
    """Leave the process group (for a process that goes on; ``meta-core train`` under
    torchrun ends its ranks with ``os._exit`` instead: gloo's threads torn down while the
    interpreter exits have aborted a rank now and then, after all its work was done)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(params: list[Tensor]) -> None:
    """Rank 0's values into every rank's ``params`` (in place)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        dist.broadcast(flat, src=0)
        _unflatten(flat, params)


def reduce_gradients(params: list[Tensor], weight: float) -> None:
    """Replace each ``p.grad`` by the sum over ranks of ``weight * p.grad`` (``weight``: this
    rank's share of the meta-batch), in one collective."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    dist.all_reduce(flat)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    _unflatten(flat, [p.grad for p in params if p.grad is not None])


def reduce_mean(values: Tensor, weight: float) -> Tensor:
    """The sum over ranks of ``weight * values`` (for logging a meta-batch's mean loss)."""
    total = values.detach().float() * weight
    dist.all_reduce(total)
    return total


def most(value: int, device: str) -> int:
    """The largest ``value`` any rank gives (a reason to stop now: a Ctrl-C, a time budget):
    every rank must leave the loop at the same iteration, or the next all-reduce waits
    forever."""
    out = torch.tensor([float(value)], device=device)
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out.item())


def check_identical(params: list[Tensor], rank: int) -> None:
    """Raise if this rank's parameters differ from rank 0's by a single bit."""
    with torch.no_grad():
        mine = torch.cat([p.detach().reshape(-1) for p in params])
        theirs = mine.clone()
        dist.broadcast(theirs, src=0)
    if not torch.equal(mine, theirs):
        gap = (mine - theirs).abs().max().item()
        raise RuntimeError(
            f"rank {rank}'s meta-parameters differ from rank 0's (max |difference| {gap:.3g})"
        )


def gather_states(state: Tensor, device: str) -> list[Tensor]:
    """Every rank's ``state`` (a random generator's: equal sizes), in rank order."""
    local = state.to(device)
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def _unflatten(flat: Tensor, into: list[Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in into:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n
