"""Federated active learning: client pools, federated acquisition (KAFAL, LoGo), and later the Flower app."""
