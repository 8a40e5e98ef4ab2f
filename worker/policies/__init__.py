"""Policies: what roomwarden does when an agent goes away, idles, runs long or hits a quota.

- ``config``: the policy file (TOML), validated at start-up, resolved per app and template;
- ``decisions``: pure rules from a policy and what happened to a Decision, recorded as a
  ``PolicyAction`` row in the transaction that saw the cause;
- ``actions``: executing a recorded action through the vendor clients, once;
- ``scans``: what the schedulers look for (idle, too long, silent, unconfirmed);
- ``quotas``: admitting new sessions under the vendor's concurrency quota and Coze's cost guard.
"""
