"""Errors a user can act on. CLIs print them as one clear message (no traceback) and exit non-zero."""

from __future__ import annotations


class Co2SInputError(ValueError):
    """Bad input: the message names the file or field and says what was expected."""
