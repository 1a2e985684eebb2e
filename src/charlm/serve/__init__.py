"""The explorer: a local web page to read with, write with and look inside trained runs."""

from .api import ApiError, Explorer, Limits
from .server import ExplorerServer, open_server, start

__all__ = ["ApiError", "Explorer", "ExplorerServer", "Limits", "open_server", "start"]
