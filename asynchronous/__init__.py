"""Asynchronous distributed label querying (AAL) on Ray actors, and the Ray executor of run.py."""
