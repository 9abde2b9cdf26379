"""The teacher's kit: a measured 90-minute class plan, slides and a handout built from the notebooks.

    python -m adapterlib.teaching build --out class-kit          # slides + handout (--pdf: also a PDF)
    python -m adapterlib.teaching measure                        # re-measure words and run times
    python -m adapterlib.teaching fit                            # does each segment fit its minutes?

:mod:`.plan` reads ``plan.json`` and selects cells from the notebooks by heading; :mod:`.measure`
writes ``measurements.json``; :mod:`.build` writes the slides and the handout. TEACHING.md at the
project's root is the teachers' guide that quotes these numbers.
"""
