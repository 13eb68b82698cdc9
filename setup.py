"""`pip install .`: the package score_sde, its experiment configs as score_sde.configs (the
repository's top-level configs/ folder) and the `score-sde` command; nothing else at top level.
In a checkout, main.py and run_lib.py at the root keep working (see score_sde/app/cli.py)."""
from setuptools import find_packages, setup

setup(
    name='score_sde',
    version='0.1.0',
    description='Continuous-time score-based generative modelling in plain PyTorch.',
    packages=find_packages(include=['score_sde', 'score_sde.*']),
    package_dir={'score_sde.configs': 'configs'},
    entry_points={'console_scripts': ['score-sde = score_sde.app.cli:run']},
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1', 'torchsde', 'torchdiffeq', 'scipy', 'numpy', 'ml-collections', 'absl-py',
        'tensorboard', 'tqdm', 'scikit-learn', 'pillow',
    ],
    extras_require={'test': ['pytest', 'safetensors', 'diffusers'], 'bench': ['matplotlib'],
                    'interop': ['safetensors']},  # .safetensors files (score_sde.interop)
)
