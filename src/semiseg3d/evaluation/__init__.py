"""Evaluation: Dice, Jaccard, HD95, ASD per case and their summaries."""
