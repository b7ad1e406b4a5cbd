"""The ``sequences`` data: labels readable only from token order and distance, longer sequences
in both modes, the data module, and its option checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import assert_names, data_defaults_off_yaml, ridge_accuracy
from vit_rope.data.common import DataConfigError
from vit_rope.data.sequences import MARKER_A, MARKER_B, SequenceConfig, SequenceDataModule, SequenceDataset
from vit_rope.errors import ConfigError


def _marker_layout(tokens: torch.Tensor) -> tuple[int, int]:
    """(order, distance): order 0 if marker A comes first."""
    a = (tokens == MARKER_A).nonzero().flatten()
    b = (tokens == MARKER_B).nonzero().flatten()
    assert len(a) == 1 and len(b) == 1  # each marker exactly once
    return int(b[0] < a[0]), abs(int(b[0]) - int(a[0]))


def test_sequences_deterministic_and_label_from_tokens():
    ds = SequenceDataset(200, 64, seed=1)
    assert torch.equal(ds[5][0], SequenceDataset(200, 64, seed=1, cache=True)[5][0])
    assert not torch.equal(ds[5][0], SequenceDataset(200, 64, seed=1, split="val")[5][0])
    near_hi, far_lo = ds.config.distance_range(64, far=False)[1], ds.config.distance_range(64, far=True)[0]
    for i in range(200):
        tokens, label = ds[i]
        assert tokens.shape == (64,) and tokens.dtype == torch.int64
        assert tokens.min() >= 1 and tokens.max() < ds.config.vocab_size
        order, dist = _marker_layout(tokens)
        assert label == order + 2 * (dist >= far_lo)
        assert dist <= near_hi or dist >= far_lo
    assert np.bincount(ds.labels.numpy(), minlength=4).min() > 30


@pytest.mark.parametrize("mode", ["canvas", "zoom"])
def test_longer_sequences_keep_labels(mode):
    short = SequenceDataset(100, 64)
    long = SequenceDataset(100, 256, mode=mode, train_length=64)
    assert torch.equal(short.labels, long.labels)
    for i in range(100):
        order, dist = _marker_layout(short[i][0])
        order_long, dist_long = _marker_layout(long[i][0])
        assert order_long == order
        assert dist_long == (dist if mode == "canvas" else round(dist * 4))


def test_bag_of_tokens_is_at_chance():
    """Token counts (what a model without positions sees) do not predict the label."""
    train, test = SequenceDataset(3000, 64), SequenceDataset(3000, 64, split="val")

    def counts(ds):
        x = torch.stack([t for t, _ in ds.__getitems__(range(len(ds)))])
        return torch.nn.functional.one_hot(x, ds.config.vocab_size).sum(1).double()

    assert ridge_accuracy(counts(train), train.labels, counts(test), test.labels, 4) < 0.30


def test_sequence_datamodule_batches():
    dm = SequenceDataModule(length=32, num_train=200, num_val=70, batch_size=32)
    assert (dm.num_classes, dm.train_resolution, dm.vocab_size) == (4, 32, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 32) and x.dtype == torch.int64 and y.shape == (32,)
    val = list(dm.val_dataloader())
    same = list(dm.eval_dataloader(32))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(val, same, strict=True))
    longer = list(dm.eval_dataloader(128))
    assert longer[0][0].shape == (32, 128)
    assert torch.equal(torch.cat([y for _, y in longer]), torch.cat([y for _, y in val]))
    with pytest.raises(DataConfigError, match="use a length of at least"):
        dm.eval_dataloader(8)


def test_python_defaults_are_the_yaml_defaults():
    assert data_defaults_off_yaml("sequences", SequenceDataModule, SequenceConfig) == {}


def test_ranges_from_a_config_file_become_tuples():
    cfg = SequenceConfig(num_classes=2.0, near=[0.05, 0.1], far=[0.3, 0.6])
    assert (cfg.num_classes, cfg.near, cfg.far) == (2, (0.05, 0.1), (0.3, 0.6)) and isinstance(cfg.num_classes, int)


WHOLE = "a whole number"


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(length=0), f"data.length=0 is out of range; set data.length to {WHOLE} in [1, inf)."),
        (dict(length="64"), f"data.length='64' is not {WHOLE}; set data.length to {WHOLE} in [1, inf)."),
        (dict(batch_size=0), f"data.batch_size=0 is out of range; set data.batch_size to {WHOLE} in [1, inf)."),
        (dict(num_workers=-2), f"data.num_workers=-2 is out of range; set data.num_workers to {WHOLE} in [0, inf)."),
        (dict(num_train=0), f"data.num_train=0 is out of range; set data.num_train to {WHOLE} in [1, inf)."),
        (dict(num_val=0), f"data.num_val=0 is out of range; set data.num_val to {WHOLE} in [1, inf)."),
        (dict(seed=-3), f"data.seed=-3 is out of range; set data.seed to {WHOLE} in [0, inf)."),
        (dict(mode="stretch"), "Unknown data.mode 'stretch'; choose one of zoom, canvas."),
        (dict(num_classes=3), "Unknown data.num_classes '3'; choose one of 2, 4."),
        (dict(vocab_size=4), f"data.vocab_size=4 is out of range; set data.vocab_size to {WHOLE} in [5, inf)."),
        (
            dict(near=0.1),
            "data.near=0.1 is not a pair of numbers; set data.near to [low, high], fractions of the training length.",
        ),
        (dict(near=[0, 0.1]), "data.near[0]=0 is out of range; set data.near[0] to a number in (0, 1)."),
        (dict(far=[0.3, 1]), "data.far[1]=1 is out of range; set data.far[1] to a number in (0, 1)."),
        (
            dict(near=[0.1, 0.4], far=[0.3, 0.5]),
            "data.near=(0.1, 0.4) and data.far=(0.3, 0.5) must be increasing fractions in (0, 1) with near below "
            "far; fix the ranges.",
        ),
        (
            dict(length=1),
            "Sequence length 1 cannot hold markers 1 tokens apart (canvas mode, training length 1); use a length "
            "of at least 2.",
        ),
    ],
)
def test_every_option_is_range_checked(kw, message):
    with pytest.raises(ConfigError) as e:
        SequenceDataModule(**{"num_train": 10, "num_val": 10, **kw})
    assert str(e.value) == message


def test_eval_mode_is_checked():
    dm = SequenceDataModule(num_train=10, num_val=10)
    with pytest.raises(ConfigError) as err:
        dm.eval_dataloader(128, mode="stretch")
    assert_names(str(err.value), "eval.mode", "stretch", "zoom, canvas")
