"""How the newsletter reads, in a real Chromium: axe-core (no violation at any impact)
on every newsletter, every archive page and every public page; dark mode emulated,
photographed and its contrast computed; the article's styles present without <style>.

Without /usr/bin/chromium these are skipped, unless REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.channels.newsletter import Newsletter, render_digest, render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.config import Settings, load_settings
from pipeline.ledger.store import Store
from pipeline.ledger.tokens import SECRET_ENV, make_token
from pipeline.site.build import build, load_posts
from tests.conftest import make_project
from tests.live_server import free_port, live_server
from tests.test_browser import ARTIFACTS, NOW, POSTS, launch_chromium, require_chromium

pytestmark = pytest.mark.browser
SECRET = "presentation-test-secret-0123456789abcdef"
SHOTS = ARTIFACTS / "newsletter"

# WCAG 2 contrast of the colours a page really shows: each element with text of its own,
# its computed colour against the first opaque background behind it.
CONTRAST_JS = """
() => {
  const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = el => { for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0.5) return c; }
    return parse(getComputedStyle(document.documentElement).backgroundColor) || {r: 255, g: 255, b: 255, a: 1}; };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest('[aria-hidden=true]')) continue;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    const fg = parse(style.color), bg = background(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    out.push({text: el.textContent.trim().slice(0, 40), color: style.color, background: `rgb(${bg.r}, ${bg.g}, ${bg.b})`,
              ratio: (a + 0.05) / (b + 0.05), large: size >= 24 || (bold && size >= 18.66)});
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Settings]]:
    require_chromium()
    mp = pytest.MonkeyPatch()
    mp.setenv(SECRET_ENV, SECRET)
    project = make_project(tmp_path_factory.mktemp("presentation"), posts=POSTS)
    # The site keeps its real base URL: the pages are asked for by path, and the browser
    # below resolves no name but 127.0.0.1, so nothing can leave this machine.
    (project / "port").write_text(str(free_port()))
    settings = load_settings(project / "pipeline.toml")
    assert build(settings, NOW, jobs=1).ok
    try:
        yield project, settings
    finally:
        mp.undo()


def newsletters(settings: Settings) -> dict[str, Newsletter]:
    env = make_environment(settings)
    posts, errors = load_posts(settings)
    assert posts and not errors
    found = {p.slug: render_post_newsletter(p, settings, env) for p in posts}
    found["digest"] = render_digest(posts, settings, env, now=NOW)
    return found


@pytest.fixture(scope="module")
def chromium(project: tuple[Path, Settings]) -> Iterator[Any]:
    with launch_chromium("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1") as browser:
        yield browser


class Axe:
    def __init__(self) -> None:
        from axe_playwright_python.sync_playwright import Axe as Runner

        self.runner = Runner()
        self.report: dict[str, list[str]] = {}

    def check(self, page: Any, name: str) -> list[str]:
        results = self.runner.run(page, options={"resultTypes": ["violations"], "iframes": False})
        found = results.response["violations"]
        self.report[name] = [f"{v['id']} ({v['impact']}): {len(v['nodes'])} node(s)" for v in found]
        return [f"{name}: {line}" for line in self.report[name]]


def test_axe_finds_no_violation_in_any_newsletter_archive_page_or_public_page(
    project: tuple[Path, Settings], chromium: Any
) -> None:
    folder, settings = project
    axe = Axe()
    problems: list[str] = []
    context = chromium.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    # The e-mails as subscribers get them (HTML part), every post's and the digest.
    for key, newsletter in newsletters(settings).items():
        page.set_content(newsletter.html, wait_until="load")
        problems += axe.check(page, f"newsletter {key}")

    # Every public page of the running site, the archive's included.
    with Store.open(settings) as store:
        pending = store.add_subscriber("pending@example.com", status="pending")
        active = store.add_subscriber("active@example.com", status="active")
    port = int((folder / "port").read_text())
    with live_server(folder, port) as server:
        base = server.url
        archive = sorted(p.name for p in (settings.out_dir / "archive").glob("*.html"))
        assert archive, "the build wrote no archive page"
        pages = ["/", "/subscribe", "/archive/", *(f"/archive/{name.removesuffix('.html')}" for name in archive)]
        pages += [
            f"/confirm/{make_token('confirm', pending.id, SECRET.encode())}",
            "/confirm/not-a-valid-token",
            f"/unsubscribe/{make_token('unsubscribe', active.id, SECRET.encode())}",
            "/no-such-page",
        ]
        for path in pages:
            page.goto(base + path)
            problems += axe.check(page, path)
        # The pages a form leads to: a mistake, "check your inbox", welcome, unsubscribed.
        page.goto(base + "/subscribe")
        page.get_by_label("Your e-mail address").fill("not an address")
        page.get_by_role("button").click()
        problems += axe.check(page, "subscribe with a mistake")
        page.get_by_label("Your e-mail address").fill("new.reader@example.com")
        page.get_by_role("button").click()
        problems += axe.check(page, "check your inbox")
        page.goto(base + f"/confirm/{make_token('confirm', pending.id, SECRET.encode())}")
        page.get_by_role("button").click()
        problems += axe.check(page, "welcome")
        page.goto(base + f"/unsubscribe/{make_token('unsubscribe', active.id, SECRET.encode())}")
        page.get_by_role("button").click()
        problems += axe.check(page, "unsubscribed")
    context.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "axe.json").write_text(json.dumps(axe.report, indent=1), encoding="utf-8")
    assert len(axe.report) >= 15
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_keeps_its_contrast_in_light_and_dark_mode(
    project: tuple[Path, Settings], chromium: Any, scheme: str
) -> None:
    _folder, settings = project
    letters = newsletters(settings)
    context = chromium.new_context(viewport={"width": 700, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    SHOTS.mkdir(parents=True, exist_ok=True)
    failures = []
    for key in ("botox-for-residual-and-phantom-limb-pain", "digest"):
        html = letters[key].html
        assert re.search(r'<meta name="color-scheme" content="light dark">', html)
        assert re.search(r'<meta name="supported-color-schemes" content="light dark">', html)
        page.set_content(html, wait_until="load")
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
        page.screenshot(path=str(SHOTS / f"{key}-{scheme}.png"), full_page=True)
        pairs = page.evaluate(CONTRAST_JS)
        assert len(pairs) > 20
        for pair in pairs:
            needed = 3.0 if pair["large"] else 4.5
            if pair["ratio"] < needed:
                failures.append(f"{key} ({scheme}): {pair}")
        body = page.evaluate("getComputedStyle(document.body).backgroundColor")
        # Dark mode really is dark: the page behind the card, and the card's text light.
        if scheme == "dark":
            assert body == "rgb(15, 23, 32)"
    context.close()
    assert not failures, "\n".join(failures)


def test_the_articles_styles_hold_in_a_client_that_drops_style_blocks(
    project: tuple[Path, Settings], chromium: Any
) -> None:
    _folder, settings = project
    html = newsletters(settings)["why-your-socket-fit-changes-in-the-first-year"].html
    stripped = re.sub(r"(?s)<style\b.*?</style>", "", html)
    assert "<style" not in stripped
    page = chromium.new_page()
    page.set_content(stripped, wait_until="load")
    styles = page.evaluate(
        """() => {
        const body = [...document.querySelectorAll('main h2')].find(h => h.textContent.trim() !== 'Sources');
        const p = document.querySelector('main p:not([style*="font-size:14px"])');
        const a = document.querySelector('main p a');
        const s = e => getComputedStyle(e);
        return {h2: [s(body).color, s(body).fontSize], p: s(p).marginBottom, a: s(a).color};
    }"""
    )
    page.close()
    assert styles == {"h2": ["rgb(11, 57, 84)", "20px"], "p": "16px", "a": "rgb(11, 92, 138)"}


def test_every_newsletter_stays_under_gmails_clipping_size(project: tuple[Path, Settings]) -> None:
    _folder, settings = project
    for key, newsletter in newsletters(settings).items():
        assert len(newsletter.html.encode("utf-8")) < 102 * 1024, key
        for page in (newsletter.html, newsletter.web_html):
            assert page.count('<main id="content">') == 1 and page.count("</main>") == 1, key
