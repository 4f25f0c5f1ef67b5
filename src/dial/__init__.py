"""dial: domain-invariant reward models for aligning language models."""

__version__ = "0.1.0"
