"""Operations: the served model (MLflow pyfunc, fetched once for `make serve`), the team tracking server and the
MLflow UI helper."""
