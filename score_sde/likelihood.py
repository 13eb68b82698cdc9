"""`score_sde.likelihood`, a stable public name: the module is `score_sde.maths.likelihood`."""
import sys

from score_sde.maths import likelihood as _module

sys.modules[__name__] = _module
