"""The flow of every answer: task kind → engine → escalation → call log, in one object."""

from workhorse.pipeline.answer import Answer, Source
from workhorse.pipeline.factory import build_pipeline
from workhorse.pipeline.pipeline import Pipeline
from workhorse.pipeline.tally import Tally

__all__ = ["Answer", "Pipeline", "Source", "Tally", "build_pipeline"]
