"""Holds the ``sitecustomize`` that ``tinker-actors exec`` puts first on ``PYTHONPATH``."""
