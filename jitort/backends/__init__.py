"""Execution backends. Each turns a bound graph into an executable Plan."""

from .base import Backend, Plan, get_backend  # noqa: F401
