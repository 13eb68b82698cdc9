"""`score_sde.guidance`, a stable public name: the module is `score_sde.maths.guidance`."""
import sys

from score_sde.maths import guidance as _module

sys.modules[__name__] = _module
