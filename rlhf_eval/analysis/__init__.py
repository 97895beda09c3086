"""Estimators that turn stored samples into over-optimization answers; pure functions over arrays."""
