"""An offline RLHF world that over-optimizes on a CPU.

Corpus and gold rubric (``world.py``, ``gold.py``); the proxy reward model, PPO/GRPO/DPO runs
and the best-of-N family build on them.
"""
