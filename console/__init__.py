"""dbp-lab console (Textual TUI): docs/console.md."""
