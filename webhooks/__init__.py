"""The Starlette adapter: receive and verify callbacks, store them, answer; serve the read API."""
