"""Report figures inline, where the terminal can show images (textual-image: the Sixel or Kitty
graphics protocols). The terminal is asked once, before the app starts (it cannot be asked while
Textual owns the terminal): :func:`probe_inline_images` in ``console.app.main``."""
from __future__ import annotations

__all__ = ["probe_inline_images", "image_widget"]


def probe_inline_images() -> str | None:
    """'sixel' or 'tgp' when the terminal showed it can draw images, else None (also when
    textual-image is not installed or standard output is not a terminal)."""
    try:
        from textual_image import renderable
        from textual_image import widget  # noqa: F401 — measures the cell size while it still can
    except Exception:  # noqa: BLE001 — any failure means: no inline images
        return None
    if renderable.Image is renderable.SixelImage:
        return "sixel"
    if renderable.Image is renderable.TGPImage:
        return "tgp"
    return None


def image_widget(path, **kw):
    """A widget showing the PNG at ``path`` with the protocol probed (call only after a probe
    said yes)."""
    from textual_image.widget import Image
    return Image(str(path), **kw)
