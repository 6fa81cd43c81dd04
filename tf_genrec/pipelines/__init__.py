"""Offline jobs on Apache Beam: user histories from an event log, the item
table and batch recall at scale.

The transforms only distribute the single-machine library (text encoders,
RQ-VAE, collision handling, the exported recall SavedModel); they run on any
Beam runner (DirectRunner in tests; Dataflow, Flink, Spark: docs/scaling.md).
"""
