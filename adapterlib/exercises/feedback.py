"""How a verdict is shown: a coloured box with a symbol and a word in Jupyter, the same words in plain text.

Right and wrong differ by symbol and word as well as colour (✔ Correct, ✘ Not yet, … Not answered),
so the difference survives colour blindness, a projector and a terminal.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

VERDICTS = {
    "correct": ("✔", "Correct", "#1b5e20", "#e8f5e9"),
    "wrong": ("✘", "Not yet", "#b71c1c", "#ffebee"),
    "unanswered": ("…", "Not answered yet", "#4a4a4a", "#f2f2f2"),
    "prediction": ("?", "Guess first", "#4a4a4a", "#f2f2f2"),
}


@dataclass(frozen=True)
class Feedback:
    """One verdict: ``kind`` (a key of VERDICTS), the exercise id, the message and an optional next step."""

    kind: str
    exercise_id: str
    message: str
    next_step: str = ""

    def text(self) -> str:
        symbol, word, _, _ = VERDICTS[self.kind]
        label = f"[{self.exercise_id}] " if self.exercise_id else ""
        lines = [f"{label}{symbol} {word}: {self.message}"]
        if self.next_step:
            lines.append(self.next_step)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        symbol, word, colour, background = VERDICTS[self.kind]
        label = f"[{html.escape(self.exercise_id)}] " if self.exercise_id else ""
        next_step = (
            f'<div style="margin-top: 0.3em">{html.escape(self.next_step)}</div>' if self.next_step else ""
        )
        return (
            f'<div style="border-left: 0.4em solid {colour}; background: {background}; color: #111; '
            "padding: 0.4em 0.7em; margin: 0.2em 0; font-size: 1.05em; line-height: 1.4; "
            'white-space: normal; word-break: normal; overflow-wrap: normal">'
            f'<strong style="color: {colour}">{symbol} {word}</strong> {label}{html.escape(self.message)}'
            f"{next_step}</div>"
        )

    def show(self) -> None:
        """Display as HTML in IPython (with the plain text alongside), else print the plain text."""
        shell = _ipython()
        if shell is None:
            print(self.text())
            return
        from IPython.display import display

        display({"text/plain": self.text(), "text/html": self._repr_html_()}, raw=True)


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()
