"""What an adaptation holds in memory: measured per meta-model, the activations its backward
needs, ANIL's head alone keeping far less; and the estimate above the real peak."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meta_core.artifact import load_artifact
from meta_core.inner_loop import InnerLoop
from meta_core.memory import ALLOCATOR_SLACK, HEADROOM, measure
from meta_core.networks import head_names
from tests.conftest import ROOT

OMNIGLOT = ROOT / "models" / "omniglot-5w1s"


def test_what_conv4_keeps_per_row_is_the_activations_its_backward_needs():
    memory = load_artifact(OMNIGLOT).adapt_memory
    # Each block at side s: the conv's input, the norm's input, the ReLU's output (the pool
    # reads the same tensor), the pool's int64 indices, the norm's mean and 1/std; then the
    # head's input, the loss's log-probabilities (5 classes) and the label.
    expected, channels, side = 0, 1, 28
    for _ in range(4):
        expected += 4 * channels * side**2 + 2 * 4 * 64 * side**2
        expected += 8 * 64 * (side // 2) ** 2 + 2 * 4
        channels, side = 64, side // 2
    expected += 4 * 64 * side**2 + 4 * 5 + 8
    assert memory.kept_per_row == expected == 730_492
    assert memory.widest_per_row == 4 * 64 * 28 * 28  # the first block's activation
    assert memory.input_per_row == 4 * 28 * 28


def test_adapting_the_head_alone_keeps_only_the_heads_input():
    art = load_artifact(OMNIGLOT)
    head = head_names(art.params)
    loop = InnerLoop(art.network(), "classification", 5, 0.4, head, first_order=True, eager=True)
    memory = measure(loop, art.params, art.row_shape, art.n_outputs)
    assert memory.kept_per_row == 4 * 64 + 4 * 5 + 8  # the head's input, the loss's
    assert memory.fixed >= 2 * sum(art.params[k].nbytes for k in head)


def test_the_estimate_grows_with_the_rows_and_counts_the_steps_only_when_there_are_some():
    memory = load_artifact(OMNIGLOT).adapt_memory
    one, ten = memory.peak(1, 0, 1), memory.peak(10, 0, 1)
    # Each row: its tensors, a quarter more and twice as much again kept by the allocator;
    # and the decoded row twice.
    per_row = (HEADROOM + 2) * memory.step_per_row + 2 * 3136
    assert ten - one == pytest.approx(9 * per_row, abs=2)
    assert memory.peak(10, 0, 0) < ten  # no step: scoring alone
    assert memory.peak(10, 1000, 1) > memory.peak(1000, 0, 0)  # and the query set too
    assert memory.peak(0, 0, 0) == memory.fixed
    # What the allocator keeps beyond a quarter more stops growing at ALLOCATOR_SLACK.
    big, bigger = memory.peak(1000, 0, 1), memory.peak(2000, 0, 1)
    assert 2 * 1000 * memory.step_per_row > ALLOCATOR_SLACK
    assert bigger - big == pytest.approx(1000 * (HEADROOM * memory.step_per_row + 2 * 3136), 2)


@pytest.mark.slow
def test_the_estimate_is_above_a_real_adaptations_peak():
    # A fresh process, the service's own adaptation on a pool thread (benchmarks/adapt_memory).
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.adapt_memory", "--rows", "300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    case = json.loads(done.stdout.strip().splitlines()[-1])
    assert case["support"] == 300 and case["peak_mib"] > 0.5 * 300 * 730_492 / 2**20
    assert case["peak_mib"] < case["estimate_mib"] < 2 * case["peak_mib"], case
