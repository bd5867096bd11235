"""The report a quality engineer signs: derived numbers, figures, bad cases, the MLflow trend, HTML and PDF."""
