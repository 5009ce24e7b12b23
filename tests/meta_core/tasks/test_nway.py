"""The N-way K-shot sampler's guarantees."""

import pytest
import torch

from meta_core.tasks import NWayKShot, pool_from_labelled


def test_nway_tasks_are_disjoint_and_permuted():
    # 30 classes of 20 examples; each example's value encodes (class, index).
    values = torch.arange(30 * 20, dtype=torch.float32).view(30, 20, 1)
    family = NWayKShot({"train": values, "val": values, "test": values}, ways=5, shots=2, queries=3)
    b = family.sample(200, torch.Generator().manual_seed(0))
    assert b.support_x.shape == (200, 10, 1) and b.query_x.shape == (200, 15, 1)
    first_label_class = set()
    for t in range(200):
        s, q = b.support_x[t, :, 0].long(), b.query_x[t, :, 0].long()
        assert not set(s.tolist()) & set(q.tolist())  # no example in both
        classes_s, classes_q = s // 20, q // 20
        assert len(set(classes_s.tolist())) == 5
        for label in range(5):  # one class per label, the same in support and query
            assert len(set(classes_s[b.support_y[t] == label].tolist())) == 1
            assert set(classes_q[b.query_y[t] == label].tolist()) == set(
                classes_s[b.support_y[t] == label].tolist()
            )
        first_label_class.add(classes_s[b.support_y[t] == 0][0].item())
    assert len(first_label_class) > 20  # label 0 is a different class from task to task


def test_pool_from_labelled_groups_by_class():
    x = torch.arange(12.0).view(12, 1)
    y = torch.tensor([0, 1, 2] * 4)
    pool = pool_from_labelled(x, y)
    assert pool.shape == (3, 4, 1)
    assert torch.equal(pool[1, :, 0], torch.tensor([1.0, 4.0, 7.0, 10.0]))


def test_classes_of_different_sizes_never_draw_padding():
    # 10 classes padded to 12 examples; class c holds c + 5 of them (values >= 0), padding -1.
    counts = torch.arange(10) + 5
    pool = torch.full((10, 12, 1), -1.0)
    for c, n in enumerate(counts.tolist()):
        pool[c, : min(n, 12), 0] = torch.arange(min(n, 12)) + 100 * c
    counts = counts.clamp(max=12)
    family = NWayKShot(
        {s: pool for s in ("train", "val", "test")},
        ways=4,
        shots=2,
        queries=3,
        counts={s: counts for s in ("train", "val", "test")},
    )
    b = family.sample(300, torch.Generator().manual_seed(1))
    drawn = torch.cat([b.support_x, b.query_x], 1)
    assert (drawn >= 0).all()  # never the padding
    assert len(torch.unique(drawn)) > 60  # every real example can be drawn


def test_fewer_ways_than_outputs_use_the_first_labels():
    values = torch.arange(8 * 6, dtype=torch.float32).view(8, 6, 1)
    family = NWayKShot({s: values for s in ("train", "val", "test")}, ways=5, shots=1, queries=2)
    b = family.sample(4, torch.Generator().manual_seed(0), ways=3)
    assert b.support_x.shape == (4, 3, 1) and set(b.support_y.unique().tolist()) == {0, 1, 2}
    for bad in (1, 6):
        with pytest.raises(
            ValueError, match=f"^{bad}-way tasks: the family's model has 5 outputs$"
        ):
            family.sample(1, torch.Generator(), ways=bad)
