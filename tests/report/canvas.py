"""What a drawn figure lets run off its canvas, for the image-level tests of figures."""

from __future__ import annotations


def texts_outside(figure) -> list[str]:
    """What a drawn ``figure`` does not hold whole within its canvas (a pixel of slack): each
    panel with everything it draws (title, labels, the tick labels it shows, its legend),
    the figure's own texts and legends."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer, frame = canvas.get_renderer(), figure.bbox
    boxes = [(f"panel {ax.get_title()!r}", ax.get_tightbbox(renderer)) for ax in figure.axes]
    boxes += [(text.get_text(), text.get_window_extent(renderer))
              for text in [*figure.texts, figure._suptitle] if text and text.get_text()]
    boxes += [("legend", legend.get_window_extent(renderer)) for legend in figure.legends]
    return [name for name, box in boxes if box is not None and (
        box.x0 < frame.x0 - 1 or box.x1 > frame.x1 + 1 or box.y0 < frame.y0 - 1
        or box.y1 > frame.y1 + 1)]
