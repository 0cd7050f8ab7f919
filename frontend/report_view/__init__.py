"""The exported report's view model, section by section: pre-formatted strings and rows for the templates.

:mod:`.verdict` (verdict and at-a-glance cards), :mod:`.attack_tables` (accuracy table and
per-attack metrics), :mod:`.distributions` (gradient layers and figure alt texts),
:mod:`.provenance` (model, scan list, run and settings), :mod:`.figure_blocks` (figures as
embeddable blocks) and :mod:`.formatting` (numbers as text). :mod:`frontend.report_html`
puts them together.
"""
