"""memory-hygiene: a Kubernetes operator that keeps cluster memory honest."""

__version__ = "0.1.0"
