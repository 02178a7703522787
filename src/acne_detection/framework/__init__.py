"""Kedro glue: the hooks, the configuration loader, MLflow tracking helpers and the privacy
defaults every process applies first (the Kedro datasets are the sibling package ``datasets``)."""
