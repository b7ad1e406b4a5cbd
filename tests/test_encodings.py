"""The typed encoding configs: each YAML exposes exactly its family's keys, *_ape configs compose
their parent, and a wrong key or value ends in one sentence naming it."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tests.conftest import ROOT, compose_train
from vit_rope.errors import ConfigError, PositionConfigError
from vit_rope.models import encodings
from vit_rope.models.encodings import ENCODINGS, RopeAxial, build_pos_embed, make_pos_embed

POS_DIR = ROOT / "conf" / "pos_embed"
PRESETS = {"rope_dinov3"}  # a family with some options set: its YAML composes the family's
assert PRESETS == set(encodings.PRESETS)


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_yaml_has_exactly_the_keys_of_its_family(name):
    cfg = compose_train(f"pos_embed={name}").pos_embed
    family = ENCODINGS[name]
    fields = {f.name for f in dataclasses.fields(family)}
    assert set(cfg) - {"_target_"} == fields, name
    built = build_pos_embed(cfg)
    assert type(built) is family and built.name == name
    if name in PRESETS:  # a preset sets some options on purpose, the same in Python and YAML
        assert built == make_pos_embed(name)
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
    assert built.absolute == "learned" and built.rotary is not None


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
        assert not cfg.rotary_settings().augments
    assert RopeAxial(jitter=1.5).rotary_settings().augments


def test_name_must_belong_to_the_family():
    with pytest.raises(PositionConfigError, match="pos_embed.name 'rope_mixed' is not a name of RopeAxial"):
        RopeAxial(name="rope_mixed")
