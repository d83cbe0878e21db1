"""Helpers shared by several test modules (a test module imports these, never another test
module): ``console`` for the console's pilot tests, ``studies`` for the studies run end to end."""
