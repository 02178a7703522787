"""The deployed model's one home: its record (``record``), the predictor every caller uses
(``predictor``: photos in; lesions, counts, grades and grade probabilities out) and the served
MLflow model (``served``). The runtimes it can run on are one table, ``core.runtimes``.

Nothing here imports Kedro: the served model loads with MLflow and this package alone.
"""
