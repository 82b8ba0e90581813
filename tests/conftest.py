"""Shared fixtures. Torch runs on one thread in tests: processes may overlap on 2 cores."""

from __future__ import annotations
