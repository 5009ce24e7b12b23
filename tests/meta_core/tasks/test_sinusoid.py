"""The sinusoid family is W1 exactly."""

import math

import torch

from meta_core.tasks import Sinusoid


def test_sinusoid_matches_w1():
    b = Sinusoid(shots=10, queries=10).sample(2000, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (2000, 10, 1) and b.query_y.shape == (2000, 10, 1)
    assert b.support_x.min() >= -5 and b.support_x.max() <= 5
    amp, phase = Sinusoid.sample_functions(5000, torch.Generator().manual_seed(0))
    assert amp.min() >= 0.1 and amp.max() <= 5.0 and phase.min() >= 0 and phase.max() <= math.pi
    test = Sinusoid().sample(3, torch.Generator().manual_seed(0), split="test", shots=5)
    assert test.support_x.shape == (3, 5, 1)
    torch.testing.assert_close(test.query_x[1, :, 0], torch.linspace(-5, 5, 100))
