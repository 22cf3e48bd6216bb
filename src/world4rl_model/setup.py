"""Built by colcon (ament_python); the metadata and data files are in setup.cfg."""

from setuptools import setup

setup()
