"""dbp-lab console (Textual TUI): see issue 7."""
