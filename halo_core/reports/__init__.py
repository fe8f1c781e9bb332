"""Rendering only: figures and HTML from results already computed (docs/design.md §2 (graph))."""
