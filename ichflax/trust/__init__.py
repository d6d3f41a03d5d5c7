"""Trust: is it a head CT slice (scope), is it like the training data (domain), calibration,
operating points, and the one status schema (verdict). Never imports training."""
