"""Presets are typed: tagged [family] and [model] tables, eval overrides that never drop keys."""

import pytest

from meta_core.config import Conv4Model, OmniglotFamily, eval_config, load_config


def test_family_and_model_tables_are_typed():
    cfg = load_config("omniglot-20w1s")
    assert isinstance(cfg.family, OmniglotFamily) and cfg.family.ways == 20
    assert isinstance(cfg.model, Conv4Model) and cfg.model.norm == "layer"
    with pytest.raises(ValueError, match="family: Input tag 'cifar' found using 'name'"):
        load_config("omniglot-20w1s", ["family.name=cifar"])
    with pytest.raises(ValueError, match="model.conv4.norm: Input should be 'layer' or 'none'"):
        load_config("omniglot-20w1s", ["model.norm=batch"])


def test_eval_overrides_take_eval_fields_only():
    recorded = load_config("sinusoid").eval
    cfg = eval_config(recorded, ["tasks=30", "eval.shots=[5]"])
    assert cfg.tasks == 30 and cfg.shots == [5] and cfg.steps == recorded.steps
    with pytest.raises(ValueError, match="eval takes \\[eval\\] fields"):
        eval_config(recorded, ["train.iterations=3"])
    with pytest.raises(ValueError, match="eval.tasks: Input should be greater than or equal to 1"):
        eval_config(recorded, ["tasks=0"])
