"""coldstart: time a Python SDK's cold start in CPU-throttled containers."""

__version__ = "0.1.0"
