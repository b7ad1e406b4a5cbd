"""Typed configs from Hydra groups: a group's keys must be the fields of its dataclass.

Hydra composes plain dictionaries; :func:`build_dataclass` turns one into the dataclass that
types it, so that a misspelt or foreign key (``+pos_embed.foo=1``) ends in one sentence that
names the key and the valid ones, and the dataclass's ``__post_init__`` range-checks each value
once, before anything is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from vit_rope.errors import ConfigError

T = TypeVar("T")


def plain(node: Any) -> Any:
    """An OmegaConf node as plain Python containers (interpolations resolved); others unchanged."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_dataclass(cls: type[T], values: Mapping[str, Any], group: str, what: str | None = None) -> T:
    """``cls(**values)`` after checking that every key is a field of ``cls``.

    Args:
        cls: The dataclass.
        values: The group's keys (``_target_`` is ignored).
        group: The config group as the user types it, e.g. ``pos_embed`` or ``optim``.
        what: The option chosen in the group (e.g. ``rope_axial``), for the message.
    """
    values = {k: v for k, v in dict(plain(values)).items() if k != "_target_"}
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in values if k not in fields]
    if unknown:
        owner = f"{group}={what}" if what else group
        raise ConfigError(
            f"{group}.{unknown[0]} is not an option of {owner}; its options are {', '.join(fields)} "
            f"(remove {unknown[0]} or pick another {group})."
        )
    return cls(**values)
