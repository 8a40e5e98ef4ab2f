"""What every Celery job shares: the per-process context, leases, publishing after a commit."""
