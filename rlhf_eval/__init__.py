"""rlhf-eval: evaluation and monitoring harness for RLHF checkpoints.

Samples checkpoints on a prompt suite, scores them with proxy and gold reward models,
estimates KL from the reference, runs symptom detectors and stores everything in DuckDB.
"""

__version__ = "0.1.0"
