"""The pre-run check: a Hydra callback that refuses a bad command before Hydra writes anything."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from vit_rope.errors import ConfigError
from vit_rope.tasks.common import check_options, note_run_dir
from vit_rope.tasks.train import check_before_run


class CheckBeforeRun(Callback):
    """Hydra callback: the config's checks (and, for ``train``, the run directory's) before Hydra
    creates the run directory or writes its ``.hydra/`` files and log, so that a refused command
    leaves an existing run directory byte for byte as it was. A refusal is one sentence on stderr
    and exit status 2. Runs only for single runs; each job of a ``-m`` sweep checks itself.

    Register with ``hydra.callbacks.check._target_: vit_rope.tasks.precheck.CheckBeforeRun``.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        note_run_dir(None)  # not what an earlier command in this process saw: a refused job writes error.txt

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        out = Path(os.path.abspath(str(config.hydra.run.dir)))
        note_run_dir(out)
        task_cfg = copy.deepcopy(config)
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            if config_name == "train":
                check_before_run(task_cfg, out, [str(o) for o in config.hydra.overrides.task])
            else:
                check_options(task_cfg, str(config_name), [str(o) for o in config.hydra.overrides.task])
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
