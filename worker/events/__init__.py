"""Events out: what happened, told to the app that owns the conversation.

- ``outbox``: events written in the transaction of the change that caused them, read in commit order;
- ``sessions``, ``turns``, ``actions``, ``callbacks``: what each event type says and when it is emitted;
- ``endpoints``, ``addresses``: the app's endpoints and the guard on where they may point;
- ``fanout``, ``delivery``, ``signing``, ``sender``: outbox to deliveries, each signed (Standard
  Webhooks), sent, retried on a schedule and recorded;
- ``stream``: the same events as a live stream (the web side is ``webhooks/events.py``).
"""
