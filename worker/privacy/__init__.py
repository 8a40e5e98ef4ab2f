"""What users said, removed on schedule (transcript retention) or on request (a user's erasure)."""
