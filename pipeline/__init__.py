"""Jameson Prosthetics publishing pipeline."""

__version__ = "0.1.0"

# The clinic's configuration file, relative to where a command runs.
DEFAULT_CONFIG = "pipeline.toml"
