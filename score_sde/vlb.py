"""`score_sde.vlb`, a stable public name: the module is `score_sde.maths.vlb`."""
import sys

from score_sde.maths import vlb as _module

sys.modules[__name__] = _module
