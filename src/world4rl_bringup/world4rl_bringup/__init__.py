"""Launch files, parameters, DDS profile, camera and recorder nodes, and the `world4rl` command line."""

__version__ = "0.1.0"
