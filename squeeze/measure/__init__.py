"""Measuring models: accuracy on data splits, parameters and MACs."""
