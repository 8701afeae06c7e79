"""What a job will cost: PoYo's price formulas (formula.py) and estimates (estimate.py)."""
