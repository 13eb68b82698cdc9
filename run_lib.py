"""Kept so that `import run_lib` works from a checkout: the code is score_sde/app/run_lib.py (this
name is the same module object, so monkeypatching run_lib.X patches the code that runs)."""
import sys

from score_sde.app import run_lib as _run_lib

sys.modules[__name__] = _run_lib
