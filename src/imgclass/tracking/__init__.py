"""MLflow runs, training curves and the comparison of runs."""
