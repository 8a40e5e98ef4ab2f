"""The Coze emulator fixtures (``coze`` at real speed, ``fast_coze`` at 180x), shared with the client tests."""

from tests.worker.vendors.coze.support import coze, fast_coze

__all__ = ["coze", "fast_coze"]
