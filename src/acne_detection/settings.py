"""Kedro project settings."""

from acne_detection.hooks import CheckoutLock, RunReportHooks

HOOKS = (CheckoutLock(), RunReportHooks())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
