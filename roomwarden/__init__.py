"""The ``roomwarden`` command: run the service, show a demo, read transcripts, operate the inbox."""
