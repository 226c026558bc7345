"""Evaluation.

Metrics from confusion matrices, the test-time protocol (inference), the evaluation loop, and the tables, figures
and HTML report it writes.
"""
