"""The API's contract: typed request and response models for every ``/v1`` route, and the OpenAPI
3.1 document built from them (``openapi.py``), served at ``/openapi.json`` and read at ``/docs``.

The models mirror what the domain functions return (``worker.sessions.reading.describe``,
``worker.analysis.summary``, ``worker.events.history``...); the schemathesis test in CI calls
the live app and holds every answer to them, so a field added or renamed without the contract
fails there, not in a client's code.
"""
