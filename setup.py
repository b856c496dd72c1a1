"""Shim so that older tooling (and `pip install -e .` on old pips) finds setup.cfg."""

from setuptools import setup

setup()
