"""The measuring instrument: pairs, styles, the probe, the estimator, claims, and its checks.

Task-agnostic: it sees a model, its inputs and the layers to hook; the tasks say which pairs and
layers fit them (:mod:`stdyn.tasks`).
"""
