"""DCGAN and class-conditional DCGAN baselines."""
