"""The Rewind application: CLI, configuration, sidecar service, embedded dev database."""

__version__ = "0.1.0"
