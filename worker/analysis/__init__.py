"""What analysts read: catalog, search, statistics, latency, exports and transcript formats."""
