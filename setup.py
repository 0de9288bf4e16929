"""Packaging glue that pyproject.toml cannot express: every ``imlscan*`` package is found
automatically, and ``weights/`` (the embedded default weights and the ``DEFAULT`` file naming
them) is installed as the package data directory ``imlscan/_weights``. Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["imlscan", "imlscan.*"]), "imlscan._weights"],
    package_dir={"imlscan._weights": "weights"},
)
