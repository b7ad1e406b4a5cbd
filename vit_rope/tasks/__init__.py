"""The thin task functions behind ``train.py`` and ``eval.py``: plain functions of a Hydra config."""
