"""Console widgets."""
from .form import ExperimentForm, FieldRow
from .plots import CurvePlot, SweepPlot

__all__ = ["ExperimentForm", "FieldRow", "CurvePlot", "SweepPlot"]
