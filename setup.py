"""Setuptools shim: all metadata lives in setup.cfg (declarative)."""

from setuptools import setup

setup()
