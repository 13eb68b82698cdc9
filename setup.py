from setuptools import find_packages, setup

setup(
    name='score_sde',
    version='0.1.0',
    description='Continuous-time score-based generative modelling in plain PyTorch.',
    packages=find_packages(include=['score_sde', 'score_sde.*']),
    py_modules=['run_lib', 'main'],
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1', 'torchsde', 'torchdiffeq', 'scipy', 'numpy', 'ml-collections', 'absl-py',
        'tensorboard', 'tqdm', 'scikit-learn', 'pillow',
    ],
    extras_require={'test': ['pytest'], 'bench': ['matplotlib']},
)
