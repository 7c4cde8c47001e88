"""Dataset-independent FKAL pipeline: data protocol, training, descriptors, matching, strategies."""
