"""The package's version (read by its build, so it is written once)."""

__version__ = "0.1.0"
USER_AGENT = f"cropq-client/{__version__}"
