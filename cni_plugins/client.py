"""Kept for plugin scripts written by earlier versions of `pynet cni install` (``from cni_plugins.client
import run``); `pynet cni install` writes scripts that call cni_plugins.main."""

from .main import run  # noqa: F401
