"""The typed encoding configs: each YAML exposes exactly its family's keys, *_ape configs compose
their parent, a wrong key or value ends in one sentence naming it, and a new family is one class
and one YAML file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import yaml

from tests.conftest import MODEL_TINY, ROOT, compose_train, read_results
from vit_rope import STRATEGIES, create_model
from vit_rope.errors import ConfigError, PositionConfigError
from vit_rope.layers.rotary import axial_frequencies
from vit_rope.models.encodings import ENCODINGS, RopeAxial, RopeSpiral, build_pos_embed, make_pos_embed

POS_DIR = ROOT / "conf" / "pos_embed"


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_yaml_has_exactly_the_keys_of_its_family(name):
    cfg = compose_train(f"pos_embed={name}").pos_embed
    family = ENCODINGS[name]
    fields = {f.name for f in dataclasses.fields(family)}
    assert set(cfg) - {"_target_"} == fields, name
    built = build_pos_embed(cfg)
    assert type(built) is family and built.name == name
    if name in family.presets:  # a preset sets some options on purpose, the same in Python and YAML
        assert built == make_pos_embed(name) != family()
        return
    # the YAML values are the dataclass defaults (one source of truth, no drift)
    defaults = dataclasses.asdict(family())
    assert {k: v for k, v in dataclasses.asdict(built).items() if k != "name"} == {
        k: v for k, v in defaults.items() if k != "name"
    }


@pytest.mark.parametrize(
    "name,parent",
    [(n, n[: -len("_ape")]) for n in ENCODINGS if n.endswith("_ape")],
)
def test_ape_configs_compose_their_parent(name, parent):
    text = yaml.safe_load((POS_DIR / f"{name}.yaml").read_text())
    assert text["defaults"][0] == parent and set(text) == {"defaults", "name"}  # no copied keys
    a, b = compose_train(f"pos_embed={name}").pos_embed, compose_train(f"pos_embed={parent}").pos_embed
    assert {k: v for k, v in a.items() if k != "name"} == {k: v for k, v in b.items() if k != "name"}
    # an option of the parent reaches the *_ape form too
    assert compose_train(f"pos_embed={name}", "pos_embed.base=7").pos_embed.base == 7
    built = build_pos_embed(compose_train(f"pos_embed={name}").pos_embed)
    assert built.absolute == "learned" and built.rotary


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build_pos_embed(compose_train("pos_embed=rope_axial", "+pos_embed.foo=1").pos_embed)
    assert str(err.value) == (
        "pos_embed.foo is not an option of pos_embed=rope_axial; its options are name, base, yarn_alpha, yarn_beta, rotate_fraction, "
        "coords, shift, jitter, rescale, layout (remove foo or pick another pos_embed)."
    )


def test_key_of_another_family_is_refused():
    with pytest.raises(ConfigError, match="pos_embed.coords is not an option of pos_embed=rope1d; its options are"):
        build_pos_embed(compose_train("pos_embed=rope1d", "+pos_embed.coords=normalized").pos_embed)
    with pytest.raises(ConfigError, match="pos_embed.base is not an option of pos_embed=ape"):
        make_pos_embed("ape", base=10.0)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"base": 1.0}, "pos_embed.base=1.0 is out of range; set pos_embed.base to a number in (1.0, inf)."),
        ({"layout": "zigzag"}, "Unknown pos_embed.layout 'zigzag'; choose one of interleaved, half."),
        ({"coords": "polar"}, "Unknown pos_embed.coords 'polar'; choose one of index, normalized."),
        ({"shift": -1.0}, "pos_embed.shift=-1.0 is out of range"),
        ({"jitter": 0.5}, "pos_embed.jitter=0.5 is between 0 and 1; it is the factor f of a log-uniform draw"),
        ({"rescale": 0.9}, "pos_embed.rescale=0.9 is between 0 and 1"),
        ({"yarn_alpha": 4.0, "yarn_beta": 2.0}, "pos_embed.yarn_beta=2.0 is out of range; set pos_embed.yarn_beta"),
    ],
)
def test_out_of_range_values_are_refused_when_typed(options, message):
    with pytest.raises(PositionConfigError if "between" in message else ConfigError) as err:
        RopeAxial(**options)
    assert str(err.value).startswith(message)


def test_zero_and_one_switch_the_augmentation_off():
    for value in (0.0, 1.0):
        cfg = RopeAxial(jitter=value, rescale=value)
        assert not cfg.augments
    assert RopeAxial(jitter=1.5).augments


def test_name_must_belong_to_the_family():
    with pytest.raises(PositionConfigError, match="pos_embed.name 'rope_mixed' is not a name of RopeAxial"):
        RopeAxial(name="rope_mixed")


# -- a new encoding: one class and one YAML file ------------------------------------------------


@pytest.fixture
def registry():
    """The registry as it was before the test (a family defined in a test leaves with it)."""
    saved = dict(ENCODINGS)
    yield ENCODINGS
    ENCODINGS.clear()
    ENCODINGS.update(saved)


def diagonal_family():
    @dataclass(frozen=True)
    class RopeDiagonal(RopeSpiral):
        """Fixed 2D RoPE whose pairs follow the two diagonals instead of x and y."""

        name: str = "rope_diagonal"
        names: ClassVar[tuple[str, ...]] = ("rope_diagonal", "rope_diagonal_ape")

        def frequencies(self, depth: int, num_heads: int, head_dim: int) -> torch.Tensor:
            turn = torch.tensor([[1.0, 1.0], [-1.0, 1.0]]) / math.sqrt(2)  # x -> (1, 1), y -> (-1, 1)
            return axial_frequencies(head_dim, float(self.base), 2) @ turn

    return RopeDiagonal


def test_a_new_family_is_one_class_and_one_yaml_file(tmp_path, registry):
    """A family defined here, with its YAML file, is composed, trained and evaluated by
    train(cfg) in this process; nothing else in the project names it. (The YAML reaches Hydra
    through its ConfigStore, the in-memory twin of a config folder.)"""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from vit_rope.tasks.train import train

    family = diagonal_family()
    assert registry["rope_diagonal"] is registry["rope_diagonal_ape"] is family
    yaml_file = tmp_path / "rope_diagonal.yaml"
    yaml_file.write_text(f"_target_: {family.__module__}.{family.__qualname__}\nname: rope_diagonal\nbase: 100.0\n")
    store = ConfigStore.instance()
    store.store(group="pos_embed", name="rope_diagonal", node=OmegaConf.load(yaml_file))
    overrides = [
        "pos_embed=rope_diagonal", *MODEL_TINY, "data.num_train=128", "data.num_val=64", "data.batch_size=64",
        "trainer.max_epochs=1", "logger=none", "eval.resolutions=[32,48]", f"eval.strategies=[{','.join(STRATEGIES)}]",
        "eval.logn=[false]", "eval.diagnostics_images=0", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        train(cfg)
    finally:
        store.repo["pos_embed"].pop("rope_diagonal.yaml")

    results = read_results(tmp_path / "run")
    assert results["run"]["pos_embed"] == "rope_diagonal"
    larger = {m["strategy"]: m for m in results["metrics"] if m["resolution"] == 48}
    assert set(larger) == set(STRATEGIES)
    assert larger["ntk"]["top1"] is None and larger["ntk"]["note"] == "n/a"  # not axis-aligned: the class says so
    for strategy in ("extrapolate", "interpolate", "yarn"):
        assert 0.0 <= larger[strategy]["top1"] <= 100.0, strategy
    # the rotation is the class's own: pairs along the diagonals, where axial RoPE has x and y
    model = create_model("vit_micro", "rope_diagonal", num_classes=4, img_size=32, patch_size=8)
    freqs = model.rope.freqs  # (d/2, 2)
    torch.testing.assert_close(freqs[:, 0].abs(), freqs[:, 1].abs())
    assert freqs.abs().min() > 0 and model.abs_pos is None
    assert create_model("vit_micro", "rope_diagonal_ape", img_size=32, patch_size=8).abs_pos is not None


def test_a_family_cannot_take_a_name_that_is_taken(registry):
    with pytest.raises(TypeError, match="pos_embed=rope_axial is RopeAxial; give RopeCopy another name"):

        @dataclass(frozen=True)
        class RopeCopy(RopeAxial):
            names: ClassVar[tuple[str, ...]] = ("rope_axial",)

    assert registry["rope_axial"] is RopeAxial
