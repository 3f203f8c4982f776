"""Supervision of the local approval data: alerts, rules, complaints, evaluations, scores, stats, metrics."""
