"""``python -m rlhf_eval``: the same as the ``rlhf-eval`` command."""

from rlhf_eval.cli import main

if __name__ == "__main__":
    main()
