"""Operations: the served model (MLflow pyfunc), the team tracking server and the MLflow UI helper."""
