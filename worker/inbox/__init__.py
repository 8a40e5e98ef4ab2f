"""Where a callback enters: verified, bounded, stored once, then drained into sessions."""
