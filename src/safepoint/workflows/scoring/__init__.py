"""Scoring: records in, a model from the store applied, predictions out, exactly once."""

from .model import from_checkpointer
from .pipeline import ScoringPipeline, ScoringReport
from .schema import Field, Schema
from .sinks import AppendSink, PartsSink, Sink, StdoutSink
from .sources import BadRecord, Batch, FileSource, FolderSource, Source, StdinSource

__all__ = [
    "AppendSink",
    "BadRecord",
    "Batch",
    "Field",
    "FileSource",
    "FolderSource",
    "PartsSink",
    "Schema",
    "ScoringPipeline",
    "ScoringReport",
    "Sink",
    "Source",
    "StdinSource",
    "StdoutSink",
    "from_checkpointer",
]
