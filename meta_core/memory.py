"""What an adaptation holds in memory, measured once per meta-model.

An inner step on ``n`` support rows keeps, for its backward pass, activations that grow with
``n`` (for Conv4 on 28x28 images, most of a megabyte a row): that, not the FLOPs, is what
runs a worker out of memory. The bytes are measured rather than counted by hand: autograd's
saved tensors (``torch.autograd.graph.saved_tensors_hooks``) during one inner step on one row
and on two, the difference being what each row adds, whatever the network and whichever
parameters adapt (ANIL's head keeps far less than the whole network). :meth:`AdaptMemory.peak`
turns them into an estimate of an adaptation's peak, with the allocator's share;
docs/benchmarks.md, "Adaptation memory", compares it with the real peak (resident memory)
measured by ``benchmarks/adapt_memory.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from meta_core.inner_loop import InnerLoop

# The allocator's share beyond the tensors, chosen against measured peaks (docs/benchmarks.md,
# "Adaptation memory"):
# a quarter more, and the blocks it has freed but keeps in its heaps over the steps, up to
# twice the tensors while they are small enough to live there (glibc: under 32 MiB each), at
# most ALLOCATOR_SLACK.
HEADROOM = 1.25
ALLOCATOR_SLACK = 256 * 2**20


@dataclass(frozen=True)
class AdaptMemory:
    """Bytes an adaptation holds: per support row while it steps, and what does not grow."""

    kept_per_row: int  # what autograd keeps for the backward pass, per row
    widest_per_row: int  # the largest one tensor of those, per row: one layer's activation
    fixed: int  # parameters kept for the backward, their gradients, the new weights
    input_per_row: int  # one row of input (float32)

    @property
    def step_per_row(self) -> int:
        """A row's bytes during an inner step: what is kept, and the widest layer's gradients
        (the one flowing back into it and the one it passes on) beside it."""
        return self.kept_per_row + 2 * self.widest_per_row

    @property
    def score_per_row(self) -> int:
        """A row's bytes while it is scored (no autograd): a layer's input and output, and
        a normalization's temporary."""
        return 3 * self.widest_per_row

    def peak(self, support: int, query: int, steps: int) -> int:
        """The most one adaptation is estimated to hold at once: ``steps`` inner steps on
        ``support`` rows, scored before and after on them and on ``query`` rows (one set
        at a time), beside the decoded rows."""
        stepping = support * self.step_per_row if steps else 0
        scoring = max(support, query) * self.score_per_row
        rows = 2 * (support + query) * self.input_per_row  # decoded, then stacked
        tensors = max(stepping, scoring)
        allocator = math.ceil((HEADROOM - 1) * tensors) + min(2 * tensors, ALLOCATOR_SLACK)
        return tensors + allocator + self.fixed + rows


def measure(
    loop: InnerLoop, params: Mapping[str, Tensor], row_shape: Sequence[int], n_outputs: int
) -> AdaptMemory:
    """:class:`AdaptMemory` of ``loop`` (one step is measured; its ``steps`` are ignored)
    from ``params``, on rows of ``row_shape``."""
    one = dataclasses.replace(loop, steps=1)
    total_1, sizes_1 = _kept(one, params, row_shape, n_outputs, rows=1)
    total_2, sizes_2 = _kept(one, params, row_shape, n_outputs, rows=2)
    per_row = max(0, total_2 - total_1)
    if len(sizes_1) == len(sizes_2):  # the same tensors, in the same order
        widest = max((b - a for a, b in zip(sizes_1, sizes_2, strict=True)), default=0)
    else:
        widest = max(sizes_2, default=0) - max(sizes_1, default=0)
    names = tuple(params) if loop.adapt_names is None else tuple(loop.adapt_names)
    adapted = sum(params[k].nbytes for k in names)
    return AdaptMemory(
        kept_per_row=per_row,
        widest_per_row=max(0, widest),
        fixed=max(0, total_1 - per_row) + 2 * adapted,
        input_per_row=4 * math.prod(row_shape),
    )


def _kept(
    loop: InnerLoop,
    params: Mapping[str, Tensor],
    row_shape: Sequence[int],
    n_outputs: int,
    rows: int,
) -> tuple[int, list[int]]:
    """The bytes autograd keeps during one inner step on ``rows`` rows (each storage once:
    a tensor and its views share it), and each saved tensor's size in the order saved."""
    storages: dict[int, int] = {}
    sizes: list[int] = []

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        sizes.append(t.nbytes)
        return t

    x = torch.zeros(rows, *row_shape)
    if loop.kind == "classification":
        y = torch.zeros(rows, dtype=torch.long)
    elif loop.kind == "policy":  # an action and its weight
        y = torch.zeros(rows, n_outputs + 1)
    else:
        y = torch.zeros(rows, n_outputs)
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loop.adapt(params, x, y)
    return sum(storages.values()), sizes
