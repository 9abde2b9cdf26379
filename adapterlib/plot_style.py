"""How every chart of the package draws a method: colour, marker and line style, readable on a projector.

The colours are the Okabe-Ito palette, chosen to stay distinct for the common forms of colour
blindness; each method also has its own marker and line style, so two methods can be told apart
in grey print or by a reader who sees no colour at all. Full fine-tuning and the head alone are
references, drawn in black and grey.
"""

from __future__ import annotations

from dataclasses import dataclass

from .methods import get_method, method_names

FONT_SIZE = 14  # points at the figure's own size: readable from the back of a classroom
DPI = 100  # pixels per inch of the saved and displayed figures


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str | tuple

    def line(self) -> dict:
        """Keyword arguments for ``plot`` and ``errorbar``."""
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


OKABE_ITO = ("#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#E69F00", "#000000", "#F0E442")
LINESTYLES = (
    "-",
    (0, (5, 2)),
    (0, (1, 1.5)),
    (0, (6, 2, 1, 2)),
    (0, (3, 1, 1, 1, 1, 1)),
    (0, (10, 2, 2, 2)),
    (0, (2, 4)),
)
METHOD_ORDER = ("adapter", "lora", "dora", "parallel", "prefix", "bitfit", "ia3")  # the palette's order
REFERENCE_STYLES = {  # drawn as horizontal lines, without markers
    "full": Style("#000000", "", (0, (8, 3))),
    "head": Style("#777777", "", (0, (2, 2))),
}
MARKERS = {"parallel": "s"}  # the parallel adapter's hexagon looks like the adapter's circle from afar
SIDEWAYS = 0.05  # log10 units between two methods of one family drawn at the same size

FAMILIES = {  # the panels of the comparison chart: methods that change the model the same way
    "bottleneck adapters": ("adapter", "parallel"),
    "low-rank updates": ("lora", "dora"),
    "prefix tuning": ("prefix",),
    "biases and scales": ("bitfit", "ia3"),
}


def style(name: str) -> Style:
    """The style of a registered method or of a reference ("full", "head"); a method registered
    later than the seven here takes the next colour and line style, with its own marker."""
    if name in REFERENCE_STYLES:
        return REFERENCE_STYLES[name]
    order = list(METHOD_ORDER) + [m for m in method_names() if m not in METHOD_ORDER]
    if name not in order:
        raise KeyError(f"no style for {name!r}: it is neither a registered method nor 'full' or 'head'")
    index = order.index(name)
    return Style(
        OKABE_ITO[index % len(OKABE_ITO)],
        MARKERS.get(name, get_method(name).marker),
        LINESTYLES[index % len(LINESTYLES)],
    )


def family(name: str) -> str:
    """The panel a method is drawn in; a method of no family listed here gets a panel of its own."""
    return next((title for title, members in FAMILIES.items() if name in members), get_method(name).label)


def family_order(names: list[str]) -> list[str]:
    """``names`` in the order of :data:`FAMILIES` (a method of no family listed here last)."""
    listed = [m for members in FAMILIES.values() for m in members]
    return sorted(names, key=lambda m: listed.index(m) if m in listed else len(listed))
