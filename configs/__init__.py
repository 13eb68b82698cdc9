"""The experiment configs: each file's `get_config()` returns a locked ml_collections ConfigDict
built on `default.get_default_config()`, where every key is defined and described.

Installed, this folder is the package `score_sde.configs` (setup.py's package_dir), so the
files import each other as `score_sde.configs.<name>` and work from a checkout and installed
alike; `--config NAME` picks one by its file name (`--config digits`).
"""
