"""`score_sde.configs` in a checkout: the experiment configs live in the repository's top-level
configs/ folder, which this package's path points to (an installed wheel holds the files
themselves here: setup.py maps the package to configs/). See configs/__init__.py.
"""
import os

__path__ = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         'configs')]
