"""The Coze emulator fixtures (``coze`` at real speed, ``fast_coze`` at 180x) for these tests."""

from tests.worker.vendors.coze.support import coze, fast_coze

__all__ = ["coze", "fast_coze"]
