"""MLflow: store checks, runs, the offline journal, the model registry and the champion gate."""
