"""Measuring: what is in the training data, what the model gives away, what it can still do."""
