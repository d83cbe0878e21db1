"""A plugin module whose attribute lookup raises something other than AttributeError (bad config 81)."""


def __getattr__(name):
    raise RuntimeError(f"lookup of {name} exploded on purpose")
