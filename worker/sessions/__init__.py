"""Where callbacks become sessions and transcripts, and where API sessions are started and ended."""
