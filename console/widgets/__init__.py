"""Console widgets."""
from .form import ExperimentForm, FieldRow
from .plots import CurvePlot

__all__ = ["ExperimentForm", "FieldRow", "CurvePlot"]
