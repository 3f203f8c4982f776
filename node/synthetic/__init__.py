"""Synthetic approval data for a node: the national item catalogue, names, and the case generator."""
