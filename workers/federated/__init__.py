"""Flower client and server apps for federated pruning simulations."""
