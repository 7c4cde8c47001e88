"""Asynchronous distributed label querying (AAL, SPEC section 8) on Ray actors, and the Ray executor of run.py."""
