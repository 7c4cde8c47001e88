"""Active learning on a user's own unlabelled images with real annotators (label.py)."""
