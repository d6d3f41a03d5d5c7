"""Evaluation: metrics as plain functions, the paper's figures, the report writer."""
