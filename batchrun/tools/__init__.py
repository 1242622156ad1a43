"""Tooling around the runtime: the demo data generator, `compare`, its charts, fault drills.

Nothing in the runtime imports this package (a test checks it). `compare --html` needs
plotly, which comes with the `tools` extra: `pip install 'batchrun[tools]'`.
"""
