"""Console screens."""
from .experiments import ExperimentsScreen
from .help import HelpScreen
from .monitor import MonitorScreen
from .runs import CompareScreen, RunsScreen

__all__ = ["ExperimentsScreen", "HelpScreen", "MonitorScreen", "RunsScreen", "CompareScreen"]
