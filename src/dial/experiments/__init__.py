"""Experiments: suite files, the grid runner, checkpoint analysis, model selection without
target labels, result tables and the HTML report (``dial experiment``, ``dial report``)."""
