"""MLflow models-from-code entry points: MLflow logs these files (not a pickle of an instance)."""
