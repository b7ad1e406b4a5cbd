"""Console scripts ``vit-rope-train`` and ``vit-rope-eval``: ``train.py`` and ``eval.py`` for an
installed package, reading the configs shipped inside it (``vit_rope/conf``), from any directory."""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from vit_rope.errors import ConfigError
from vit_rope.report.callback import sweep_failures
from vit_rope.tasks.common import config_groups, output_dir, run_main
from vit_rope.tasks.compare import compare
from vit_rope.tasks.evaluate import evaluate_model
from vit_rope.tasks.train import show_config, train


def groups_help(config_name: str) -> str:
    """``group: option, ...`` for each group that ``config_name`` composes (``--help`` lists these)."""
    return "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups(config_name).items())


# conf/hydra/eval.yaml's help template lists only the groups eval.py can use through this resolver
OmegaConf.register_new_resolver("vit_rope_groups", groups_help, replace=True)


def check_group_options(config_name: str, args: list[str]) -> None:
    """An option that a config group lacks (``logger=xyz``, also in a ``-m`` list) ends in one
    sentence naming it and the options, before Hydra starts (Hydra's own report is several
    lines). Overrides that Hydra cannot parse, and runs with extra config paths, are left to Hydra.
    """
    if any(a.startswith(("-cp", "-cd", "--config", "hydra.searchpath")) for a in args):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = config_groups(config_name)
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # noqa: BLE001  a syntax error: Hydra reports it
        return
    for o in overrides:
        if o.key_or_group not in groups or o.package or o.is_delete():
            continue
        try:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        except Exception:  # noqa: BLE001  range or glob sweeps: Hydra checks them
            continue
        options = groups[o.key_or_group]
        for value in values:
            if value not in options and value != "null":
                raise ConfigError(f"Unknown {o.key_or_group} '{value}'; choose one of {', '.join(options)}.")
    check_keys_exist(config_name, overrides, groups)


def check_keys_exist(config_name: str, overrides: list, groups: dict[str, list[str]]) -> None:
    """A ``key=value`` whose key the composed config lacks (``trainer.max_epoch=3``) ends in one
    sentence naming it, the nearest keys and ``+key=value`` for adding one (Hydra's report is
    several lines and exits with status 1)."""
    import difflib

    from vit_rope.tasks.common import reference_config

    plain = [o for o in overrides if o.key_or_group not in groups and not o.key_or_group.startswith("hydra")]
    plain = [o for o in plain if not (o.package or o.is_delete() or o.is_add() or o.is_force_add())]
    if not plain:
        return
    choices = []
    for o in overrides:  # the groups chosen (the first option of a -m list), which bring their keys
        if o.key_or_group in groups and not o.package and not o.is_delete():
            first = next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()
            choices.append(f"{'+' if o.is_add() else ''}{o.key_or_group}={first}")
    try:
        reference = reference_config(config_name, choices)
    except Exception:  # noqa: BLE001  a choice Hydra cannot compose: Hydra reports it
        return
    for o in plain:
        key = o.key_or_group
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(reference, parent, default=None) if parent else reference
        siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []  # with ??? values
        if leaf not in siblings and not isinstance(node, ListConfig):
            near = difflib.get_close_matches(leaf, siblings, n=1)
            hint = f"did you mean {parent + '.' if parent else ''}{near[0]}? " if near else ""
            raise ConfigError(f"{key} is not an option; {hint}check the spelling, or add a new key with +{key}=VALUE.")


def _checked(config_name: str) -> None:
    try:
        check_group_options(config_name, sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> None:
    run_main(train, cfg)


def evaluate_task(cfg: DictConfig) -> Any:
    """What ``eval.py`` does: show and save its config tree (as ``train.py`` does), then compare
    a tree of runs or evaluate one model."""
    show_config(cfg, output_dir())
    return compare(cfg) if cfg.get("compare") else evaluate_model(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _eval(cfg: DictConfig) -> None:
    run_main(evaluate_task, cfg)


def train_main() -> None:
    """``vit-rope-train [overrides]``: the same as ``python train.py [overrides]``."""
    _checked("train")
    _train()
    if failed := sweep_failures():  # the comparison is written; the exit status says a job failed
        print(
            f"error: {len(failed)} job(s) of the sweep failed or did not finish: {'; '.join(failed)}", file=sys.stderr
        )
        sys.exit(1)


def eval_main() -> None:
    """``vit-rope-eval [overrides]``: the same as ``python eval.py [overrides]``."""
    _checked("eval")
    _eval()
