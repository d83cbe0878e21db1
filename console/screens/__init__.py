"""Console screens."""
from .experiments import ExperimentsScreen
from .help import HelpScreen
from .monitor import MonitorScreen
from .runs import CompareScreen, ConfigScreen, ReportScreen, RunsScreen
from .sweeps import SweepScreen

__all__ = ["ExperimentsScreen", "HelpScreen", "MonitorScreen", "RunsScreen", "CompareScreen", "ConfigScreen",
           "ReportScreen", "SweepScreen"]
