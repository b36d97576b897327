"""Reporting: the paper's tables and figures from run metrics."""
