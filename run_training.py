#!/usr/bin/env python3
"""The seed's training command: `python run_training.py [--symbols Nifty_2 Bank_Nifty_5 | all]`.

Runs the PPO -> MoE -> MAML sequence (`experiments.sequence`; every flag of it works here too).
"""

from experiments.sequence import run_main

if __name__ == "__main__":
    run_main()
