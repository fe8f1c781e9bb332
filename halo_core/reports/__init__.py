"""Rendering only, computing nothing: every plot and every HTML page, from results already computed
(docs/design.md §2 (graph)). figures.py draws (the only matplotlib import); evaluation, validation,
selection and gallery build one page each; markup holds what they share."""
