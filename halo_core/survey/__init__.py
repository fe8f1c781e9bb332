"""Scoring a survey's cutouts on Ray: the candidate catalogue, its gallery and the selection function (the `catalog` asset group)."""
