"""`score_sde.sdes`, a stable public name: the module is `score_sde.maths.sdes`."""
import sys

from score_sde.maths import sdes as _module

sys.modules[__name__] = _module
