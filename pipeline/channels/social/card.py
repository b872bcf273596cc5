"""The share card: a 1200 x 630 PNG with the clinic's name and the post's title.

Used as the archive page's ``og:image`` (so a shared link shows a card), as the
Bluesky link card's thumbnail and as Instagram's picture in ``queue.csv``, unless the
post has its own ``image``. Drawn with Pillow's own bundled font (no system font), so
the same title gives the same bytes on every machine, whenever it is drawn.

A card costs some 10 to 30 ms of CPU (the glyphs and the PNG), as much as the rest of
a post's build together: the build does not draw them. The web app draws a card when
someone (a social site fetching a shared link's og:image) first asks for it, and keeps
it (``pipeline.web.cards``); posting to Bluesky draws the one it uploads.
"""

from __future__ import annotations

import functools
import io
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont

from pipeline.config import Settings

WIDTH, HEIGHT = 1200, 630
BACKGROUND = (0x0B, 0x39, 0x54)  # the newsletter's header colour
TEXT = (0xFF, 0xFF, 0xFF)  # 12.6:1 on the background (WCAG AAA)
# The card is drawn in grey levels, 0 the background and 255 the text, and written as a
# palette image whose 256 colours run from one to the other: one byte a pixel, so a
# card takes milliseconds to compress, not the ~60 ms of a true-colour PNG.
TITLE_LEVEL = 255
ACCENT_LEVEL = 200  # about #c9d5da: 9:1 on the background
MARGIN = 72
TITLE_SIZES = (68, 60, 52, 46)  # the largest that fits in five lines
MAX_LINES = 5


_PALETTE = [round(b + (t - b) * level / 255) for level in range(256) for b, t in zip(BACKGROUND, TEXT, strict=True)]


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: the same on every machine


def card_alt(title: str, settings: Settings) -> str:
    return f"{settings.clinic.name}: {title}"


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def render_card(title: str, settings: Settings) -> bytes:
    """The card for an article titled ``title`` (plain text)."""
    image = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    name_font = _font(40)
    draw.text((MARGIN, MARGIN), settings.clinic.name, font=name_font, fill=ACCENT_LEVEL)
    draw.rectangle((MARGIN, MARGIN + 64, MARGIN + 120, MARGIN + 70), fill=ACCENT_LEVEL)
    width = WIDTH - 2 * MARGIN
    for size in TITLE_SIZES:
        font = _font(size)
        lines = _wrap(draw, title, font, width)
        if len(lines) <= MAX_LINES:
            break
    lines = lines[:MAX_LINES]
    y = MARGIN + 110
    for line in lines:
        draw.text((MARGIN, y), line, font=font, fill=TITLE_LEVEL)
        y += int(size * 1.2)
    footer = urlsplit(settings.clinic.base_url).hostname or ""
    draw.text((MARGIN, HEIGHT - MARGIN - 32), footer, font=_font(32), fill=ACCENT_LEVEL)
    card = Image.frombytes("P", image.size, image.tobytes())
    card.putpalette(_PALETTE)
    buffer = io.BytesIO()
    card.save(buffer, format="PNG", compress_level=1)  # flat colour compresses well even so
    return buffer.getvalue()
