"""Deciding and acting: policy, verdict, unlearning, pipeline, report, CLI."""

__version__ = "0.1.0"
