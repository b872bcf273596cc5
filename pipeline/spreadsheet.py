"""CSV cells that a spreadsheet shows as text and never runs as a formula.

Excel, LibreOffice and Google Sheets treat a cell that starts with ``=``, ``+``,
``-`` or ``@`` (or a tab or carriage return before one) as a formula, which can
fetch URLs or run commands when staff open the file ("CSV injection"). Every CSV
the pipeline writes passes its text cells through ``guard_cell``; a file read back
in goes through ``unguard_cell``, so a round trip changes nothing.
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guard_cell(cell: str) -> str:
    """``=1+1`` -> ``'=1+1``: the apostrophe makes spreadsheets show the rest as text."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def unguard_cell(cell: str) -> str:
    """Undo ``guard_cell`` (only an apostrophe that ``guard_cell`` would have added)."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_START):
        return cell[1:]
    return cell
