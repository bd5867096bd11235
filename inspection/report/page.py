"""The report page: the Jinja template rendered to HTML, and the HTML printed to PDF.

``render`` fills inspection/report/templates/report.html.j2 with the report's context. Its number helpers (M:
metrics.json, D: values derived for the report, P: promotion.json, R: a route number from metrics.json or
derived) print each number in a span that carries its key, so tests can check the page against the files.
``print_pdf`` prints the page to A4 with page numbers in a Playwright browser and returns the page count;
``versions`` lists the installed versions of the main libraries for the page.
"""
from __future__ import annotations

import html as html_lib
from importlib import metadata as importlib_metadata
from pathlib import Path
from inspection.report.numbers import lookup


TEMPLATES = Path(__file__).parent / "templates"
LIBRARIES = ("tensorflow", "keras", "tensorflowjs", "scikit-learn", "opencv-python-headless", "numpy",
             "mlflow", "dvc", "matplotlib", "jinja2", "scipy", "playwright")


def versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def _number(value, digits, scale) -> str:
    if value is None:
        return "n/a"
    if digits is None and isinstance(value, int) and scale == 1:
        return f"{value:,}"
    v = value * scale
    return f"{v:,.{digits if digits is not None else 0}f}"


def number_helpers(metrics: dict, flat: dict, promotion: dict | None):
    """Jinja globals that print a number with the attribute tests check it by."""
    from markupsafe import Markup

    def make(attr, source):
        def show(key, digits=None, scale=1, cls=""):
            value = source(key)
            extra = (f' data-digits="{digits}"' if digits is not None else "") + \
                    (f' data-scale="{scale}"' if scale != 1 else "") + (f' class="{cls}"' if cls else "")
            return Markup(f'<span {attr}="{html_lib.escape(key)}"{extra}>{_number(value, digits, scale)}</span>')
        return show
    return {"M": make("data-metric", lambda k: lookup(metrics, k)),
            "D": make("data-derived", lambda k: flat[k]),
            "P": make("data-promotion", lambda k: lookup(promotion, k))}


def render(context: dict) -> str:
    """The page from inspection/report/templates/report.html.j2 and the values of ``context``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    d = context["derived"]
    helpers = number_helpers(context["m"], d["flat"], (context["promotion"] or {}).get("doc"))
    helpers["R"] = helpers["M"]   # a route number: metrics.json's route block
    env.globals.update(helpers)
    return env.get_template("report.html.j2").render(**context)


def print_pdf(browser, html_path: Path, pdf_path: Path, footer: str) -> int:
    """Print ``html_path`` (its print stylesheet) to ``pdf_path`` as A4 with page numbers; returns the pages."""
    page = browser.new_page()
    try:
        page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
        # the signed PDF is the whole report: every collapsed section (more cases, routes per kind of image, the
        # confound table, library versions) printed open
        page.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        page.pdf(path=str(pdf_path), format="A4", print_background=True, display_header_footer=True,
                 header_template="<span></span>",
                 footer_template=f'<div style="font-size:8px;width:100%;text-align:center;color:#555">'
                                 f'{html_lib.escape(footer)} &middot; page <span class="pageNumber"></span> of '
                                 f'<span class="totalPages"></span></div>',
                 margin={"top": "14mm", "bottom": "16mm", "left": "12mm", "right": "12mm"})
    finally:
        page.close()
    return pdf_pages(pdf_path)


def pdf_pages(path: Path) -> int:
    """Pages of the printed PDF (pypdf reads its page tree)."""
    from pypdf import PdfReader

    return len(PdfReader(path).pages)
