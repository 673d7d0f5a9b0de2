#!/usr/bin/env python
"""The seed's backtest command: `python run_backtest.py [--process-data] [--symbols S ... | all] ...`.

Thin: the flags and the work live in `experiments/backtest.py` (also `python -m experiments.backtest`).
"""

from experiments.backtest import run_main

if __name__ == "__main__":
    run_main()
