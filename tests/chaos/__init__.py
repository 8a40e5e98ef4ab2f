"""Chaos: known callbacks sent through faults and attacks, the stored result compared exactly."""
