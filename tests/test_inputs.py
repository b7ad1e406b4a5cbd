"""Issue 22, inputs still not checked: mandatory values, the trainer's and the top-level options,
and booleans end in one sentence that names the option, the value and the fix, before anything is
written (exit status 2 on the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MODEL_TINY, assert_names, run_cli, run_entry, train_run
from vit_rope.errors import ConfigError

SMALL = [*MODEL_TINY, "data.num_train=256", "data.num_val=64", "logger=none"]


def refused(run_dir: Path, *overrides: str, base: tuple[str, ...] = tuple(SMALL)) -> str:
    """The message of the ConfigError that ``train.py OVERRIDES`` ends in; nothing was written."""
    with pytest.raises(ConfigError) as info:
        train_run(run_dir, *base, *overrides)
    assert not run_dir.exists()
    return str(info.value)


@pytest.mark.parametrize(
    "override, parts",
    [
        ("trainer.precision=33", ["trainer.precision", "33", "16-mixed", "bf16-mixed", "32-true"]),
        ("trainer.precision=half", ["trainer.precision", "half", "16-mixed"]),
        ("trainer.devices=0", ["trainer.devices", "0", "-1 for all", "auto"]),
        ("trainer.devices=two", ["trainer.devices", "two", "auto"]),
        ("trainer.accelerator=gpux", ["trainer.accelerator", "gpux", "cpu", "cuda"]),
        ("trainer.num_nodes=0", ["trainer.num_nodes", "0", "[1, inf)"]),
        ("trainer.max_epochs=0", ["trainer.max_epochs", "0", "[1, inf)"]),
        ("trainer.accumulate_grad_batches=0", ["trainer.accumulate_grad_batches", "0", "[1, inf)"]),
        ("seed=-1", ["seed", "-1", "[0, 4294967295]"]),
        ("seed=abc", ["seed", "abc", "whole number"]),
        ("float32_matmul_precision=low", ["float32_matmul_precision", "low", "highest", "medium"]),
    ],
)
def test_trainer_and_top_level_options_are_checked(tmp_path: Path, override: str, parts: list[str]) -> None:
    assert_names(refused(tmp_path / "run", override), *parts)


@pytest.mark.parametrize(
    "override, key",
    [
        ("evaluate=yes", "evaluate"),
        ("compile=maybe", "compile"),
        ("trainer.enable_progress_bar=nope", "trainer.enable_progress_bar"),
        ("trainer.deterministic=sometimes", "trainer.deterministic"),
        ("ema.enabled=1", "ema.enabled"),
        ("eval.logn=[false,maybe]", "eval.logn"),
    ],
)
def test_boolean_options_take_only_true_or_false(tmp_path: Path, override: str, key: str) -> None:
    value = override.split("=")[1].strip("[]").split(",")[-1]
    assert_names(refused(tmp_path / "run", override), key, value, f"{key}=")


def test_a_boolean_option_keeps_lightnings_extra_word(tmp_path: Path) -> None:
    """trainer.deterministic also takes Lightning's "warn": the check refuses only what Lightning does."""
    from tests.conftest import compose_train
    from vit_rope.tasks.common import check_options

    check_options(compose_train("trainer.deterministic=warn"), "train", ["trainer.deterministic=warn"])
    fast = ["debug=fast_dev_run", "trainer.fast_dev_run=3"]  # Lightning's number of batches
    check_options(compose_train(*fast), "train", fast)
    with pytest.raises(ConfigError, match="trainer.deterministic"):
        check_options(compose_train("trainer.deterministic=warm"), "train", ["trainer.deterministic=warm"])


def test_a_mandatory_value_names_itself(tmp_path: Path) -> None:
    assert_names(refused(tmp_path / "run", "data=imagefolder", base=tuple(MODEL_TINY)), "data.root", "data.root=")


def test_the_command_line_refuses_in_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    """Exit status 2, one line on stderr, no traceback, and an existing run directory unchanged
    (Hydra's .hydra/ files included) for train.py and eval.py: the first through a new process,
    the others through the same console-script functions in this process."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    for script, args in (
        ("train.py", ["data=imagefolder"]),
        ("train.py", ["trainer.precision=33"]),
        ("eval.py", [f"run_dir={run}", "seed=-1"]),
        ("eval.py", [f"run_dir={run}", "eval.logn=[yes]"]),
    ):
        cli = run_cli if script == "train.py" and args == ["data=imagefolder"] else run_entry
        proc = cli(script, *args, f"hydra.run.dir={run}", check=False)
        assert proc.returncode == 2, (script, args, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
        assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == [".hydra", ".hydra/config.yaml"]
        assert (run / ".hydra" / "config.yaml").read_text() == "seed: 0\n"


def test_a_removed_group_entry_is_not_a_boolean_left_unset(tmp_path: Path) -> None:
    """~callbacks.best_checkpoint removes a node whose keys include booleans: nothing to check."""
    from tests.conftest import compose_train
    from vit_rope.tasks.common import check_options

    overrides = ["~callbacks.best_checkpoint", "compile=false"]
    check_options(compose_train(*overrides), "train", overrides)


def test_a_misspelt_key_is_named_with_the_nearest_one_before_hydra_starts() -> None:
    """Hydra's own report of a key the config lacks is several lines with exit status 1; the
    entry points check the keys first (one sentence, exit status 2 through cli._checked)."""
    from vit_rope.cli import check_group_options

    with pytest.raises(ConfigError) as info:
        check_group_options("train", ["trainer.max_epoch=2"])
    assert_names(str(info.value), "trainer.max_epoch", "trainer.max_epochs", "+trainer.max_epoch=")
    with pytest.raises(ConfigError, match="eval.resolutin .*eval.resolutions"):
        check_group_options("eval", ["run_dir=x", "eval.resolutin=[3]"])
    # keys that exist (also those a chosen group brings), added, removed or Hydra's own pass
    check_group_options("train", ["-m", "pos_embed=rope_axial,rope_mixed", "pos_embed.base=10", "+foo=1",
                                  "~callbacks.progress_bar", "hydra.run.dir=x", "seed=3", "data=imagefolder",
                                  "data.root=x"])  # fmt: skip
