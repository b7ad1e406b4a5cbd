"""The one error type users see: a setting that cannot work, explained in one sentence.

Entry points (``train.py``, ``eval.py``, ``python -m vit_rope.*``) print such errors without a
traceback and exit with status 2; anything else is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A bad setting or input; the message names the value and the fix."""
