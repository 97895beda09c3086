from rlhf_eval.cli import main

main()
