"""roomwarden's domain: callbacks, sessions, transcripts, and the Celery adapter around them."""
