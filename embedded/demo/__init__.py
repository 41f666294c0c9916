"""The whole pipeline on its embedded default, in one command, and a summary of where the results are.

    python -m embedded.demo [--speed 1] [--duration SECONDS] [--serve] [--workdir var/demo]

``stack`` starts everything (real servers and every flow, each its own process) and stops it cleanly;
``progress`` reads what the processes report while they run; ``summary`` says what came out and where.
"""
