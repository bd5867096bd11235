"""The inspector page in headless Chromium (Playwright), on a small bundle built here: a tiny two-output
model (defect_probability, ood_score through inspection.model.ood's Mahalanobis layer) exported and converted like
stages/export.py does, with a metadata.json that follows the contract. The tiny model's probability rises
with the photo's mean grey level, so generated photos land on known routes:
  mean ~100 -> PASS, ~128 -> REVIEW, ~150 -> REJECT, flat grey -> RETAKE (camera check), text file -> RETAKE.
Also: the bundle server's answers to odd requests, the Node/Chromium parity of both outputs and the route,
the CSV against inspection.decision.route.csv_row, the corrections zip, and 1,000 photos without leaking tensors."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO

SIZE = 32
WIDTHS = (1366, 390)
CAMERA = {"brightness": {"min": 40.0, "max": 215.0}, "contrast": {"min": 8.0, "max": 90.0},
          "sharpness": {"min": 1.0, "max": 20000.0}}
FORMULA_NAME = "=SUM(1+1)*cmd|' -C calc'!A0.jpg"

pytestmark = pytest.mark.skipif(not (REPO / "web/node_modules/@tensorflow/tfjs").is_dir(),
                                reason="web/node_modules missing (make install)")


def photo(mean: float, seed: int, size: int = 64, flat: bool = False) -> np.ndarray:
    """A casting-like photo (rings + noise) whose mean grey level is close to ``mean``."""
    if flat:
        return np.full((size, size), int(mean), np.uint8)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2) / size
    img = 30 * np.cos(r * 30) + rng.normal(0, 8, (size, size))
    return np.clip(img - img.mean() + mean, 0, 255).astype(np.uint8)


def write_photo(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix if path.suffix in (".png", ".jpg", ".jpeg") else ".png", img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def tiny_serving_model():
    """image [N,32,32,1] raw 0-255 -> {defect_probability, ood_score}; the probability is a steep sigmoid of
    the mean grey level (0.5 at 127.5), the OOD score the Mahalanobis distance of two pooled features."""
    import keras
    from keras import layers

    from inspection.model.ood import serving_model

    inp = keras.Input((SIZE, SIZE, 1), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = layers.Conv2D(2, 1, name="features")(x)
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(1, activation="sigmoid", name="defect_probability")(pooled)
    cnn = keras.Model(inp, out, name="tiny")
    cnn.get_layer("features").set_weights([np.array([1.0, 0.5], np.float32).reshape(1, 1, 1, 2),
                                           np.array([0.0, 0.25], np.float32)])
    cnn.get_layer("defect_probability").set_weights([np.array([[40.0], [0.0]], np.float32),
                                                     np.array([-20.0], np.float32)])
    gate = {"mean": np.array([0.5, 0.5], np.float32),
            "precision": np.diag([1 / 0.15 ** 2, 1 / 0.075 ** 2]).astype(np.float32)}
    return cnn, serving_model(cnn, gate)


def build_tiny_bundle(root: Path) -> dict:
    """SavedModel + TF.js model + metadata.json + the page bundle under root; returns paths and metadata."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.deploy.saved_model import bundle_version, convert_to_tfjs, export_saved_model, graph_output_names
    from inspection.decision.route import CSV_COLUMNS, make_rule
    from inspection.deploy.bundle import build_bundle

    cnn, serving = tiny_serving_model()
    saved, tfjs, web = root / "saved_model", root / "tfjs", root / "web"
    export_saved_model(serving, SIZE, saved)
    convert_to_tfjs(saved, tfjs)
    rule = make_rule(0.5, (0.2, 0.8), CAMERA, 3.0, "Mahalanobis distance of the pooled features (test model)")
    meta = {
        "version": bundle_version(tfjs), "model": {"arch": "tiny", "parameters": int(cnn.count_params())},
        "classes": ["ok", "defect"], "positive_class": "defect", "outputs": graph_output_names(saved),
        "output": {"name": "defect_probability", "shape": [None, 1]}, "route": rule, "csv_columns": list(CSV_COLUMNS),
        "threshold": 0.5, "policy": "min_recall", "policy_target": 0.99, "review_band": rule["review_band"],
        "drift": {"features": CAMERA},
        "input": {"height": SIZE, "width": SIZE, "channels": 1, "dtype": "float32", "name": "image",
                  "signature": "serving_default", "resize": "opencv INTER_AREA", "range": "raw 0-255"},
        "test_metrics": {"n": 10, "recall": 1.0, "precision": 0.9, "roc_auc": 0.99},
        "git_commit": "0" * 40, "size_bytes": {"tfjs": sum(f.stat().st_size for f in tfjs.rglob("*") if f.is_file())},
        "tfjs_quantization": "none",
    }
    build_bundle(web, meta, tfjs, REPO / "web/node_modules", REPO / "web/src")
    return {"saved": saved, "tfjs": tfjs, "web": web, "meta": meta}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    files = {
        "pass": write_photo(d / "cast_ok_0_1001.jpeg", photo(100, 1)),
        "review": write_photo(d / "cast_def_0_4073.png", photo(128, 2)),
        "reject": write_photo(d / "cast_def_0_7710.png", photo(150, 3)),
        "blank": write_photo(d / "blank_grey.png", photo(128, 4, flat=True)),
        "formula": write_photo(d / FORMULA_NAME, photo(100, 5)),
        "long": write_photo(d / "line3_station2_camera_top_2026-11-23_part_000123.png", photo(98, 6)),
    }
    junk = d / "notes_renamed.jpg"
    junk.write_text("not a photo\n")
    files["junk"] = junk
    return files


@pytest.fixture(scope="module")
def server(tiny):
    from inspection.deploy.server import serve

    with serve(tiny["web"]) as url:
        yield url


@pytest.fixture
def open_page(browser, server):
    """open_page(width) -> a fresh page on the inspector with empty storage, model loaded."""
    pages = []

    def opener(width: int = 1366, accept_dialogs: bool = True):
        ctx = browser.new_context(viewport={"width": width, "height": 900 if width > 600 else 844},
                                  accept_downloads=True, has_touch=width < 600)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.dialogs = []
        if accept_dialogs:   # Clear asks first; the tests that are not about it say yes
            page.on("dialog", lambda d: (page.dialogs.append(d.message), d.accept()))
        page.goto(server)  # a new browser context: empty localStorage and IndexedDB
        page.evaluate("() => window.inspector.ready")
        page.errors = errors
        pages.append(ctx)
        return page

    yield opener
    for ctx in pages:
        ctx.close()


def banner(page) -> dict:
    return page.evaluate("""() => {
        const b = document.getElementById('banner');
        return { hidden: document.getElementById('latest').hidden, visible: b.getBoundingClientRect().height > 0,
                 route: b.dataset.route || null, word: document.getElementById('latest-route').textContent,
                 reason: document.getElementById('latest-reason').textContent,
                 file: document.getElementById('latest-file').textContent,
                 colour: getComputedStyle(b).backgroundColor, width: b.getBoundingClientRect().width,
                 main: document.querySelector('main').getBoundingClientRect().width }; }""")


EXPECTED = {"pass": "PASS", "review": "REVIEW", "reject": "REJECT", "blank": "RETAKE", "junk": "RETAKE"}
COLOURS = {"PASS": "rgb(26, 127, 55)", "REVIEW": "rgb(242, 169, 0)", "REJECT": "rgb(198, 40, 40)",
           "RETAKE": "rgb(55, 89, 122)"}


@pytest.mark.parametrize("width", WIDTHS)
def test_banner_shows_the_route_word_in_its_colour(open_page, photos, width):
    from inspection.deploy.server import upload

    page = open_page(width)
    assert banner(page)["hidden"] and not banner(page)["visible"]  # nothing before the first photo
    for kind, route in EXPECTED.items():
        row, = upload(page, [photos[kind]])
        b = banner(page)
        assert row["route"] == route and b["route"] == route and b["word"] == route, (kind, row, b)
        assert b["colour"] == COLOURS[route] and b["visible"]
        assert b["width"] >= b["main"] - 40  # full width
        assert b["file"] == photos[kind].name
    assert "camera check: contrast low" in upload(page, [photos["blank"]])[0]["reason"]
    text = page.text_content("body")
    for old in ("auto-pass", "manual review", "auto-reject", "DEFECT"):
        assert old not in text
    assert not page.errors


def test_clear_and_unreadable_files_never_leave_a_stale_verdict(open_page, photos):
    from inspection.deploy.server import table, upload

    page = open_page(1366)
    upload(page, [photos["reject"]])
    assert banner(page)["route"] == "REJECT"
    # an unreadable file replaces the red verdict, and gets its own row
    row, = upload(page, [photos["junk"]])
    assert row == {"file": "notes_renamed.jpg", "route": "RETAKE", "reason": "unreadable: not a decodable image",
                   "probability": None, "ood_score": None}
    b = banner(page)
    assert b["route"] == "RETAKE" and b["reason"] == "unreadable: not a decodable image" and b["file"] == "notes_renamed.jpg"
    assert [r["route"] for r in table(page)] == ["REJECT", "RETAKE"]
    # Clear: nothing shown, nothing kept
    page.click("#clear")
    b = banner(page)
    assert b["hidden"] and not b["visible"] and b["word"] == "" and b["route"] is None
    assert table(page) == [] and page.is_hidden("#batch")
    page.reload()
    page.evaluate("() => window.inspector.ready")
    assert banner(page)["hidden"] and table(page) == []


def test_unreadable_files_get_the_batch_clis_reasons(open_page, tmp_path):
    """Empty, undecodable and too-small files: RETAKE rows with the reason inspection.data.images.decode_gray gives."""
    from inspection.deploy.server import upload
    from inspection.data.images import decode_gray

    files = [tmp_path / "empty.jpg", tmp_path / "text.png", write_photo(tmp_path / "tiny.png", photo(100, 1, size=20))]
    files[0].write_bytes(b"")
    files[1].write_text("hello")
    page = open_page(1366)
    rows = upload(page, files)
    assert [r["reason"] for r in rows] == [f"unreadable: {decode_gray(f.read_bytes())[1]}" for f in files]
    assert all(r["route"] == "RETAKE" and r["probability"] is None for r in rows)


def visible_targets(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll(
            'button, summary, label.drop, input[type=text], a[href], select'))
        .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })
        .map((e) => { const r = e.getBoundingClientRect();
                      return { what: e.id || e.textContent.trim().slice(0, 30), w: r.width, h: r.height }; })""")


@pytest.mark.parametrize("width", WIDTHS)
def test_layout_fits_the_screen_with_big_targets_and_whole_file_names(open_page, photos, width, tmp_path):
    from inspection.deploy.server import upload

    page = open_page(width)
    upload(page, [photos[k] for k in ("pass", "review", "reject", "junk", "long", "formula")])
    page.click("#about summary")  # the About box open too
    overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1], f"the page scrolls sideways at {width} px: {overflow}"
    small = [t for t in visible_targets(page) if t["w"] < 44 or t["h"] < 44]
    assert not small, small
    names = page.evaluate("""() => Array.from(document.querySelectorAll('#results .filename')).map((e) => {
        const lh = parseFloat(getComputedStyle(e).lineHeight) || 20;
        return [e.textContent, e.getBoundingClientRect().height / lh]; })""")
    assert [n for n, _ in names] == [photos[k].name for k in ("pass", "review", "reject", "junk", "long", "formula")]
    short = [lines for n, lines in names if len(n) <= 24]
    assert short and max(short) < 1.6, names  # short names stay on one line: not broken into fragments
    shot = tmp_path / f"inspector-{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5_000


def test_technical_details_live_in_the_about_box(open_page, photos):
    from inspection.deploy.server import upload

    page = open_page(1366)
    upload(page, [photos["pass"]])
    main_text = page.evaluate("""() => { const c = document.querySelector('main').cloneNode(true);
        c.querySelector('#about').remove(); return c.textContent; }""")
    for word in ("wasm", "SIMD", "INTER_AREA", "min_recall", "threshold 0.5"):
        assert word not in main_text
    assert not page.evaluate("() => document.getElementById('about').open")
    page.click("#about summary")
    about = page.text_content("#about")
    assert "SIMD" in about and "INTER_AREA" in about and "min_recall" in about and "0.5000" in about
    assert "REVIEW in between" in about  # the rule sentence of metadata.route


def test_filter_shows_only_the_parts_that_need_action(open_page, photos):
    from inspection.deploy.server import upload

    page = open_page(1366)
    upload(page, [photos[k] for k in ("pass", "review", "reject", "junk")])
    visible = lambda: page.evaluate("""() => Array.from(document.querySelectorAll('#results tbody tr'))
        .filter((tr) => tr.getBoundingClientRect().height > 0).map((tr) => tr.dataset.route)""")  # noqa: E731
    assert visible() == ["PASS", "REVIEW", "REJECT", "RETAKE"]
    page.click("#filter")
    assert page.get_attribute("#filter", "aria-pressed") == "true"
    assert visible() == ["REVIEW", "REJECT", "RETAKE"]
    page.click("#filter")
    assert visible() == ["PASS", "REVIEW", "REJECT", "RETAKE"]


def test_results_survive_a_reload_until_clear(open_page, photos):
    from inspection.deploy.server import table, upload

    page = open_page(390)
    shown = upload(page, [photos[k] for k in ("pass", "review", "junk", "reject")])
    page.click("#results tbody tr[data-route='REVIEW'] [data-fix='defect']")
    page.evaluate("() => window.inspector.save()")
    page.reload()
    page.evaluate("() => window.inspector.ready")
    assert table(page) == shown
    assert banner(page)["hidden"]   # the banner is for a photo inspected now: no replay of the last session's
    assert "4 earlier results kept on this device" in page.text_content("#status")
    rows = page.evaluate("() => window.inspector.rows()")
    assert [r["has_thumb"] for r in rows] == [True, True, False, True]
    assert [r["correction"] for r in rows] == [None, "defect", None, None]
    assert "4 parts" in page.text_content("#summary")
    page.click("#clear")
    page.reload()
    page.evaluate("() => window.inspector.ready")
    assert table(page) == [] and banner(page)["hidden"]


def test_non_castings_get_no_label_until_the_operator_says_it_is_a_casting(open_page, photos, tmp_path):
    """A RETAKE photo (here a blank frame: contrast low) offers "It is a casting", not Is defect / Is OK; the
    corrections zip never holds it unless the operator first confirmed it."""
    from inspection.deploy.server import upload

    page = open_page(1366)
    upload(page, [photos["blank"], photos["review"]])
    retake = "#results tbody tr[data-route='RETAKE']"
    assert page.locator(f"{retake} .fix-button").count() == 0
    assert page.locator(f"{retake} .casting-button").count() == 1
    page.click("#results tbody tr[data-route='REVIEW'] [data-fix='defect']")
    page.fill("#who", "QA Jane")
    with page.expect_download() as dl:
        page.click("#corrections")
    with zipfile.ZipFile(dl.value.path()) as z:
        assert [n for n in z.namelist() if n != "corrections.json"] == [f"defect/{photos['review'].name}"]
    page.click(f"{retake} .casting-button")      # the operator says: this is a casting
    page.click(f"{retake} [data-fix='ok']")
    with page.expect_download() as dl:
        page.click("#corrections")
    with zipfile.ZipFile(dl.value.path()) as z:
        assert sorted(n for n in z.namelist() if n != "corrections.json") == sorted(
            [f"defect/{photos['review'].name}", f"ok/{photos['blank'].name}"])
    assert not page.errors


def test_banner_says_last_photo_with_the_batch_verdict_beside_it(open_page, photos):
    from inspection.deploy.server import upload

    page = open_page(1366)
    upload(page, [photos["reject"], photos["blank"], photos["pass"]])
    assert banner(page)["route"] == "PASS"   # the last photo ...
    assert page.text_content("#latest-label") == "Last photo"
    assert page.text_content("#batch-verdict") == "· batch: 3 parts, 2 need action (see the list)"  # ... and the batch


def test_reasons_come_with_an_operator_action_and_the_numbers_below(open_page, photos):
    from inspection.deploy.server import upload

    page = open_page(1366)
    row, = upload(page, [photos["blank"]])
    assert "contrast low" in row["reason"]   # the engineer's numbers, in the reason line
    assert page.text_content("#latest-action") == "Flat photo: check the lamp and that the part fills the frame"
    assert "contrast low" in page.text_content("#latest-reason")
    upload(page, [photos["junk"]])
    assert page.text_content("#latest-action").startswith("The file could not be read")
    upload(page, [photos["reject"]])
    assert page.text_content("#latest-action") == "Scrap or rework the part"
    assert page.text_content("#results tbody tr[data-route='RETAKE'] .todo").startswith("Flat photo")


def test_a_message_is_scrolled_into_view_from_far_down_a_list(open_page, photos, tmp_path):
    """On a phone, a correction clicked far down a long list without a name: the note asking for one is on screen."""
    from inspection.deploy.server import upload

    page = open_page(390)
    more = [write_photo(tmp_path / f"part_{i:02d}.png", photo(96 + i, 40 + i)) for i in range(14)]
    upload(page, more + [photos["review"]])
    review = page.locator("#results tbody tr[data-route='REVIEW'] [data-fix='ok']").last
    review.scroll_into_view_if_needed()
    assert not in_viewport(page, "#who-note") or page.is_hidden("#who-note")
    review.click()
    assert page.is_visible("#who-note") and in_viewport(page, "#who-note")


def in_viewport(page, selector: str) -> bool:
    return page.evaluate("""s => { const r = document.querySelector(s).getBoundingClientRect();
        return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }""", selector)


def test_a_review_goes_into_the_csv_and_need_action_counts_down(open_page, photos):
    """The operator's decision on a REVIEW part: the row shows the final route, "need action" goes down, the CSV
    carries the label, the final route, who and when; the message to enter a name appears beside its field."""
    from inspection.deploy.server import upload

    page = open_page(1366)
    upload(page, [photos["review"], photos["reject"]])
    assert "2 need action" in page.text_content("#summary")
    review = "#results tbody tr[data-route='REVIEW']"
    page.click(f"{review} [data-fix='ok']")               # no name yet: said next to the name field
    assert page.is_visible("#who-note") and "Checked by" in page.text_content("#who-note")
    page.click(f"{review} [data-fix='ok']")               # undo
    page.fill("#who", "QA Jane")
    assert page.is_hidden("#who-note")
    page.click(f"{review} [data-fix='ok']")
    assert page.text_content(f"{review} .pill") == "REVIEW → PASS"
    summary = page.text_content("#summary")
    assert "1 needs action" in summary and "1 reviewed" in summary
    with page.expect_download() as dl:
        page.click("#csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    by = {r["file"]: r for r in rows}
    done = by[photos["review"].name]
    assert (done["route"], done["reviewed_as"], done["final_route"], done["checked_by"]) == ("REVIEW", "ok", "PASS", "QA Jane")
    assert done["checked_at"].endswith("+00:00")
    assert by[photos["reject"].name]["reviewed_as"] == "" and by[photos["reject"].name]["final_route"] == ""


def test_the_same_photo_added_twice_is_flagged_and_counted_once(open_page, photos):
    from inspection.deploy.server import upload

    page = open_page(1366)
    upload(page, [photos["review"], photos["pass"]])
    upload(page, [photos["review"]])
    assert page.text_content("#results tbody tr:nth-child(3) .dupe") == \
        f"same photo as #1 ({photos['review'].name}): counted once"
    summary = page.text_content("#summary")
    assert summary.startswith("2 parts") and "1 photo added twice" in summary and "1 needs action" in summary
    assert "added twice" in page.text_content("#status")


def test_a_model_folder_without_a_decision_shows_approval_unknown(open_page):
    page = open_page(1366)
    version = page.evaluate("() => fetch('metadata.json').then((r) => r.json()).then((m) => m.version)")
    assert page.text_content("#approval") == f"Model {version}: approval unknown (no decision in metadata.json)"


def meta_side(page) -> int:
    return page.evaluate("() => fetch('metadata.json').then((r) => r.json()).then((m) => m.input.height)")


def test_a_thumbnail_opens_the_photo_full_size(open_page, tmp_path):
    """The original photo in a dialog; after a reload only the photos of parts that need action are kept, so a
    PASS part's dialog shows its small preview (the model input, at most 64 px) and says why."""
    from inspection.deploy.server import upload

    big = write_photo(tmp_path / "big_part.png", photo(128, 2, size=300))          # REVIEW: kept
    good = write_photo(tmp_path / "big_good_part.png", photo(100, 1, size=300))    # PASS: not kept
    page = open_page(390)
    upload(page, [big, good])

    def open_and_measure(file: str) -> tuple[int, str]:
        page.click(f"#results tbody tr:has-text('{file}') img.zoomable")
        page.wait_for_function("document.getElementById('zoom').open && document.getElementById('zoom-img')"
                               ".complete && document.getElementById('zoom-img').naturalWidth > 0")
        width = page.evaluate("() => document.getElementById('zoom-img').naturalWidth")
        caption = page.text_content("#zoom-caption")
        page.keyboard.press("Escape")
        assert not page.evaluate("() => document.getElementById('zoom').open")
        return width, caption

    for file in ("big_part.png", "big_good_part.png"):
        width, caption = open_and_measure(file)
        assert width == 300 and file in caption and "preview" not in caption   # the photo, not 64 px
    assert page.text_content("#results tbody tr:has-text('big_good_part.png') .route") == "PASS"
    page.reload()
    page.wait_for_selector("#results tbody tr img.zoomable")
    width, caption = open_and_measure("big_part.png")
    assert width == 300 and "preview" not in caption
    width, caption = open_and_measure("big_good_part.png")
    assert width == min(64, meta_side(page)) and "small preview (after a reload only the photos of parts that need action" in caption


def test_the_status_counts_every_queued_batch(open_page, photos):
    """Two batches dropped at once: while they run the status counts both ("of 3"), then says 3 inspected."""
    import base64

    page = open_page(1366)
    payload = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in
               (photos["pass"], photos["review"], photos["reject"])]
    page.evaluate("""(files) => {
        window.__statuses = [];
        new MutationObserver(() => window.__statuses.push(document.getElementById('status').textContent))
          .observe(document.getElementById('status'), { childList: true, characterData: true, subtree: true });
        const drop = (list) => {
          const dt = new DataTransfer();
          for (const [name, b64] of list) dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name));
          document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        };
        drop(files.slice(0, 2));
        drop(files.slice(2));   // queued while the first batch runs
      }""", payload)
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length >= 3")
    page.evaluate("() => window.inspector.idle()")
    statuses = page.evaluate("() => window.__statuses")
    busy = [t for t in statuses if t.startswith("Inspecting")]
    assert [t.split(":")[0] for t in busy] == ["Inspecting 1 of 3", "Inspecting 2 of 3", "Inspecting 3 of 3"], statuses
    assert statuses[-1].startswith("Ready · 3 photos inspected"), statuses


def test_clear_asks_first_and_keeps_everything_when_refused(open_page, photos):
    from inspection.deploy.server import table, upload

    page = open_page(390, accept_dialogs=False)
    upload(page, [photos["review"]])
    page.click("#results tbody tr[data-route='REVIEW'] [data-fix='defect']")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("#clear")
    assert asked and "1 correction" in asked[0] and "cannot be undone" in asked[0]
    assert len(table(page)) == 1 and page.evaluate("() => window.inspector.rows()")[0]["correction"] == "defect"
    page.once("dialog", lambda d: d.accept())
    page.click("#clear")
    assert table(page) == []


def test_a_second_retake_for_the_same_reason_goes_to_review(open_page, photos, tmp_path):
    """The same part photographed again (one photo at a time) and RETAKE again for the same cause, with other
    measured numbers (no two photos measure the same): a third photo will not help, a person inspects it. The
    escalated row may not be a casting: it gets labels only after "It is a casting". In a batch of many photos
    nothing is escalated."""
    from inspection.deploy.server import upload

    again = photo(120, 0, flat=True)
    again[:3, :3] = 160                              # another blank frame: other bytes, other numbers, same causes
    again = write_photo(tmp_path / "blank_again.png", again)
    page = open_page(1366)
    first, = upload(page, [photos["blank"]])
    second, = upload(page, [again])
    assert first["route"] == "RETAKE" and second["route"] == "REVIEW"
    assert second["reason"].startswith("second RETAKE for the same reason (")
    assert first["reason"] not in second["reason"]   # the numbers differ: the causes matched, not the text
    causes = page.evaluate("r => window.inspector.reasonCauses(r)", first["reason"])
    assert causes and all(c in second["reason"] for c in causes)
    row = "#results tbody tr[data-route='REVIEW']"
    assert page.locator(f"{row} .fix-button").count() == 0 and page.locator(f"{row} .casting-button").count() == 1
    third, = upload(page, [photos["blank"]])
    assert third["route"] == "RETAKE"   # a new part: the count starts again
    batch = upload(page, [photos["blank"], again])
    assert [r["route"] for r in batch] == ["RETAKE", "RETAKE"]


def python_rows(tiny, files: list[Path]) -> list[dict]:
    """What the batch CLI computes for these files: the SavedModel's outputs, inspection.decision.route.decide, csv_row."""
    from inspection.deploy.saved_model import saved_model_outputs
    from inspection.data.images import decode_gray, resize
    from inspection.data.imagestats import features
    from inspection.decision.route import camera_reasons, csv_row, decide

    meta, rule = tiny["meta"], tiny["meta"]["route"]
    out = []
    for f in files:
        img, why = decode_gray(f.read_bytes())
        if img is None:
            out.append(csv_row(f.name, "RETAKE", f"unreadable: {why}", None, rule["threshold"], None, None, [],
                               meta["version"], ""))
            continue
        x = resize(img, SIZE)
        o = saved_model_outputs(tiny["saved"], x[None])
        p, s = float(o["defect_probability"][0]), float(o["ood_score"][0])
        st = {k: v for k, v in features(x).items() if k in CAMERA}
        route, reason = decide(p, st, s, rule)
        out.append(csv_row(f.name, route, reason, p, rule["threshold"], s, st, camera_reasons(st, CAMERA),
                           meta["version"], ""))
    return out


def decoder_contract_files(folder: Path) -> dict[str, Path]:
    """One table of odd formats run through both the page and the batch CLI (the decoder contract)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    base = photo(110, 11)                                   # a good-looking part, 8-bit gray
    rgba = np.dstack([base, base, base, np.full_like(base, 255)])
    rgba[:, :12, 3] = 0                                     # a transparent border ...
    rgba[:, 12:20, 3] = 128                                 # ... and a half-transparent one
    rgba[:, :12, :3] = 255                                  # (white under the transparent pixels)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    pal = Image.fromarray(base).convert("P")
    pal.info["transparency"] = 0
    pal.save(folder / "palette_transparent.png", transparency=0)
    Image.fromarray(base).save(folder / "gray.tif")
    Image.fromarray(np.dstack([base, base, base])).save(folder / "rgb_deflate.tif", compression="tiff_adobe_deflate")
    Image.fromarray((base.astype(np.uint16) * 16)).save(folder / "sensor_16bit.tif")
    cv2.imwrite(str(folder / "sensor_16bit.png"), base.astype(np.uint16) * 16)
    return {p.name: p for p in sorted(folder.iterdir())}


def test_page_and_cli_decode_the_same_formats_the_same_way(open_page, tiny, tmp_path):
    """TIFF (gray, RGB deflate), PNG with alpha or a transparent palette entry, 16-bit PNG/TIFF: the page and the
    batch CLI (inspection.data.images.decode_gray) give the same route and reason, and the same numbers."""
    from inspection.deploy.server import upload

    files = decoder_contract_files(tmp_path / "contract")
    page = open_page(1366)
    shown = upload(page, list(files.values()))
    expected = python_rows(tiny, list(files.values()))
    for got, want in zip(shown, expected):
        assert (got["file"], got["route"], got["reason"]) == (want["file"], want["route"], want["reason"]), (got, want)
        if want["defect_probability"]:
            assert abs(got["probability"] - float(want["defect_probability"])) <= 2e-3, (got, want)
    by = {r["file"]: r for r in shown}
    assert by["sensor_16bit.png"]["reason"] == by["sensor_16bit.tif"]["reason"] == \
        "unreadable: 16-bit image; save it as an 8-bit JPEG or PNG"
    assert by["gray.tif"]["probability"] is not None and by["rgb_deflate.tif"]["probability"] is not None
    assert not page.errors


def test_csv_has_the_cli_columns_words_and_escapes_formulas(open_page, photos, tiny):
    from inspection.deploy.server import upload
    from inspection.decision.route import CSV_COLUMNS

    page = open_page(1366)
    files = [photos[k] for k in ("pass", "review", "reject", "blank", "junk", "formula")]
    upload(page, files)
    with page.expect_download() as dl:
        page.click("#csv")
    assert re.fullmatch(r"inspection-[0-9-]+\.csv", dl.value.suggested_filename)
    raw = Path(dl.value.path()).read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    got = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert got[5]["file"] == "'" + FORMULA_NAME  # a spreadsheet shows it as text, never runs it (the CLI too)
    for g in got:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", g.pop("timestamp"))
    expected = python_rows(tiny, files)
    for e in expected:
        e.pop("timestamp")
    # same words and numbers; the OOD score and probability may differ in the last printed digit only
    for g, e in zip(got, expected):
        for k in ("defect_probability", "ood_score"):
            if e[k]:
                assert abs(float(g.pop(k)) - float(e.pop(k))) <= 2e-3, (k, g, e)
            else:
                assert g.pop(k) == e.pop(k) == ""
    assert got == expected
    assert [g["route"] for g in got] == ["PASS", "REVIEW", "REJECT", "RETAKE", "RETAKE", "PASS"]


def test_corrections_zip_holds_the_original_photos_and_who_when_which_model(open_page, photos, tiny, tmp_path):
    from inspection.deploy.server import upload

    page = open_page(390)
    upload(page, [photos[k] for k in ("pass", "review", "reject")])
    assert page.is_disabled("#corrections")
    page.click("#results tbody tr[data-route='REVIEW'] [data-fix='defect']")
    page.click("#latest-ok")  # the banner shows the REJECT part: the operator says it is fine
    page.click("#results tbody tr[data-route='PASS'] [data-fix='defect']")
    page.click("#results tbody tr[data-route='PASS'] [data-fix='defect']")  # second tap takes it back
    assert page.text_content("#corrections") == "Download corrections (2)"
    page.click("#corrections")  # no name yet: asks for it, downloads nothing
    assert page.get_attribute("#status", "data-state") == "error" and "Checked by" in page.text_content("#status")
    page.fill("#who", "Dana (QA)")
    with page.expect_download() as dl:
        page.click("#corrections")
    assert re.fullmatch(r"corrections-[0-9-]+\.zip", dl.value.suggested_filename)
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # every CRC checks
        names = sorted(z.namelist())
        assert names == sorted(["defect/cast_def_0_4073.png", "ok/cast_def_0_7710.png", "corrections.json"])
        assert z.read("defect/cast_def_0_4073.png") == photos["review"].read_bytes()
        assert z.read("ok/cast_def_0_7710.png") == photos["reject"].read_bytes()
        doc = json.loads(z.read("corrections.json"))
    assert doc["who"] == "Dana (QA)" and doc["model_version"] == tiny["meta"]["version"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", doc["when"])
    parts = {p["file"]: p for p in doc["parts"]}
    assert parts["cast_def_0_4073.png"]["corrected_label"] == "defect" and parts["cast_def_0_4073.png"]["route"] == "REVIEW"
    assert parts["cast_def_0_7710.png"]["corrected_label"] == "ok" and parts["cast_def_0_7710.png"]["route"] == "REJECT"
    assert 0 <= parts["cast_def_0_7710.png"]["defect_probability"] <= 1
    # the name is remembered, and the photos of parts that needed action survive a reload
    page.reload()
    page.evaluate("() => window.inspector.ready")
    assert page.input_value("#who") == "Dana (QA)"
    with page.expect_download() as dl2:
        page.click("#corrections")
    with zipfile.ZipFile(dl2.value.path()) as z:
        assert z.read("defect/cast_def_0_4073.png") == photos["review"].read_bytes()


def test_zip_from_node_opens_in_python(tmp_path):
    """zip.js alone: UTF-8 names, empty and binary members, CRCs that Python checks."""
    rng = np.random.default_rng(3)
    members = {"defect/Gußteil 1.png": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "ok/empty.jpg": b"",
               "corrections.json": b'{"who": "x"}'}
    (tmp_path / "in.json").write_text(json.dumps({k: list(v) for k, v in members.items()}))
    script = tmp_path / "z.mjs"
    script.write_text(f"""import {{ readFileSync, writeFileSync }} from 'node:fs';
import {{ zipStore, crc32 }} from '{(REPO / 'web/src/zip.js').as_uri()}';
const m = JSON.parse(readFileSync('{tmp_path / 'in.json'}', 'utf8'));
const files = Object.entries(m).map(([name, b]) => ({{ name, bytes: Uint8Array.from(b) }}));
writeFileSync('{tmp_path / 'out.zip'}', zipStore(files));
writeFileSync('{tmp_path / 'crc.json'}', JSON.stringify(crc32(new TextEncoder().encode('123456789'))));
""")
    res = subprocess.run(["node", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "crc.json").read_text()) == 0xCBF43926  # the CRC-32 check value
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert z.testzip() is None
        assert {n: z.read(n) for n in z.namelist()} == members


def test_a_thousand_photos_leak_no_tensors_and_keep_the_page_painting(open_page, tmp_path):
    """1,000 small photos in one go: tf.memory().numTensors is the same before and after, the page paints
    while it works (animation frames during the batch), every photo has a row, and the rows survive a reload.
    The measured figures are printed (pytest -s) and written to the test's tmp dir."""
    from inspection.deploy.server import table

    rng = np.random.default_rng(0)
    files = []
    for i in range(1000):
        mean = float(rng.choice([100, 128, 150]))
        files.append(write_photo(tmp_path / "many" / f"part_{i:04d}.png", photo(mean, i, size=48)))
    page = open_page(1366)
    before = page.evaluate("() => window.inspector.memory()")
    page.evaluate("""() => { window.__frames = 0; window.__painting = true;
        const tick = () => { window.__frames += 1; if (window.__painting) requestAnimationFrame(tick); };
        requestAnimationFrame(tick); window.__t0 = performance.now(); }""")
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length >= 1000", timeout=600_000)
    page.evaluate("() => window.inspector.idle()")
    stats = page.evaluate("""() => { window.__painting = false;
        return { frames: window.__frames, ms: performance.now() - window.__t0,
                 heap: performance.memory ? performance.memory.usedJSHeapSize : null,
                 stored: (localStorage.getItem('casting-inspector/results') || '').length }; }""")
    after = page.evaluate("() => window.inspector.memory()")
    figures = {"photos": 1000, "numTensors_before": before["numTensors"], "numTensors_after": after["numTensors"],
               "numBytes_before": before["numBytes"], "numBytes_after": after["numBytes"],
               "animation_frames_during_batch": stats["frames"], "batch_ms": round(stats["ms"]),
               "js_heap_bytes_after": stats["heap"], "localStorage_chars": stats["stored"]}
    print("\n1000-photo run:", json.dumps(figures))
    (tmp_path / "thousand.json").write_text(json.dumps(figures))
    assert after["numTensors"] == before["numTensors"] and after["numBytes"] == before["numBytes"]
    assert stats["frames"] > 10  # the page kept painting while it worked
    rows = table(page)
    assert len(rows) == 1000 and {r["route"] for r in rows} <= {"PASS", "REVIEW", "REJECT", "RETAKE"}
    page.reload()
    page.evaluate("() => window.inspector.ready")
    assert len(table(page)) == 1000
    page.click("#clear")


# ----- parity of both outputs and the route, Node and Chromium (stages/web.py's functions) -------------------

def test_node_and_chromium_match_the_saved_model_on_both_outputs_and_the_route(tiny, browser, server, photos):
    from inspection.data.images import resize
    from inspection.data.imagestats import features
    from inspection.decision.route import decide
    from inspection.deploy.parity import compare, run_chromium, run_node, saved_outputs
    import base64

    rule = tiny["meta"]["route"]
    rng = np.random.default_rng(11)
    imgs = [photo(m, i) for i, m in enumerate([90, 100, 118, 122, 127, 128, 131, 135, 140, 150, 200, 30])]
    imgs.append(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    prepared = np.stack([resize(g, SIZE) for g in imgs])
    saved = saved_outputs(tiny["saved"], prepared)
    stats = [features(x) for x in prepared]
    expected = [decide(float(p), s, float(o), rule) for p, s, o in zip(saved["defect_probability"], stats, saved["ood_score"])]
    assert {r for r, _ in expected} == {"PASS", "REVIEW", "REJECT", "RETAKE"}
    node = run_node(tiny["web"] / "model", imgs, prepared, rule, tiny["meta"]["outputs"], REPO / "web/node_modules")
    assert node["nodes"] == {"defect_probability": "Identity:0", "ood_score": "Identity_1:0"}
    encoded = []
    for g in imgs:
        ok, buf = cv2.imencode(".png", g)
        encoded.append(base64.b64encode(buf.tobytes()).decode())
    chrome = run_chromium(browser, server, encoded, prepared)
    runs = {f"node {b}": r["prepared"] for b, r in node["backends"].items()}
    runs.update({f"node {b} (page resize)": r["js_resize"] for b, r in node["backends"].items()})
    runs["chromium page"] = chrome["page"]
    checks = {k: compare(saved, r, expected, 0.5) for k, r in runs.items()}
    print("\nparity on the tiny model:", json.dumps(checks))
    for name, c in checks.items():
        assert c["max_abs_diff"] <= 1e-3 and c["ood_max_rel_diff"] <= 1e-3, (name, c)
        assert c["route_mismatches"] == 0 and c["verdict_mismatches"] == 0, (name, c)
    assert chrome["page_pixels"]["max_abs_diff"] == 0


BUNDLE_DAMAGED = "this model bundle is damaged: rebuild it (dvc repro web)"
DAMAGED_BUNDLES = [   # (fault, change to metadata.json or None for text that is not JSON, the page's status line)
    ("threshold garbled", lambda m: m["route"].update(threshold="abc"),
     f"metadata.json: route.threshold is not a number; {BUNDLE_DAMAGED}"),
    ("route missing", lambda m: m.pop("route"), f"metadata.json: route is missing; {BUNDLE_DAMAGED}"),
    ("band reversed", lambda m: m["route"].update(review_band={"low": 0.8, "high": 0.2}),
     f"metadata.json: route.review_band: low 0.8 is above high 0.2; {BUNDLE_DAMAGED}"),
    ("input size not the model's", lambda m: m["input"].update(height=48, width=48),
     f"metadata.json: input.height is 48 but the model takes 32x32 images; {BUNDLE_DAMAGED}"),
    ("output name not the model's", lambda m: m["outputs"].update(ood_score="Identity_9:0"),
     f'metadata.json: outputs.ood_score is "Identity_9:0", which the model does not have; {BUNDLE_DAMAGED}'),
    ("not JSON", None, "metadata.json: is not valid JSON ("),
]


@pytest.mark.parametrize("fault,damage,expect", DAMAGED_BUNDLES, ids=[d[0] for d in DAMAGED_BUNDLES])
def test_a_damaged_bundle_says_so_in_one_line_and_routes_nothing(tiny, browser, photos, tmp_path, fault, damage, expect):
    """metadata.json checked by web/src/schema.js (the keys of inspection/deploy/model_folder.py): a garbled or
    mismatched file is one line in the status, the inputs are disabled and no photo gets a route."""
    import base64
    import copy
    import shutil

    from inspection.deploy.server import serve, table

    web = tmp_path / "web"
    shutil.copytree(tiny["web"], web)
    meta = copy.deepcopy(tiny["meta"])
    if damage is not None:
        damage(meta)
    (web / "metadata.json").write_text(json.dumps(meta) if damage is not None else '{"version": "abc", "route": {')
    with serve(web) as url:
        ctx = browser.new_context(viewport={"width": 1366, "height": 900})
        try:
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=60_000)
            status = page.text_content("#status")
            assert status.startswith(expect) and status.endswith(BUNDLE_DAMAGED) and "\n" not in status, status
            assert page.is_disabled("#files") and page.is_disabled("#camera-start")
            assert page.get_attribute("#drop", "aria-disabled") == "true"
            b64 = base64.b64encode(photos["reject"].read_bytes()).decode()
            refused = page.evaluate("(b) => window.inspector.inspectBase64(b).then(() => 'routed', (e) => e.message)", b64)
            assert refused == status
            try:
                page.set_input_files("#files", [str(photos["reject"])], timeout=2_000)
            except Exception:   # a disabled input may refuse the files outright
                pass
            page.wait_for_timeout(500)
            assert table(page) == [] and page.is_hidden("#latest") and page.text_content("#status") == status
        finally:
            ctx.close()


def test_web_stage_checks_chromium_before_any_node_work(project, monkeypatch):
    import stages.web as web
    from inspection.errors import UserError

    project(web__chromium="/nonexistent/chromium")
    called = []
    monkeypatch.setattr(web, "ensure_node_modules", lambda: called.append("npm"))
    monkeypatch.setattr(web, "run_node", lambda *a, **k: called.append("node"))
    with pytest.raises(UserError, match="Chromium not found at /nonexistent/chromium"):
        web.main([])
    assert called == []


def test_node_modules_come_from_the_main_workspace_in_a_dvc_temp_workspace(tmp_path, monkeypatch):
    from inspection.deploy.bundle import node_modules_dir

    main = tmp_path / "repo"
    (main / "web/node_modules/@tensorflow").mkdir(parents=True)
    temp = main / ".dvc/tmp/exps/tmpabc123"
    (temp / "web/src").mkdir(parents=True)
    monkeypatch.chdir(temp)
    assert node_modules_dir().resolve() == (main / "web/node_modules").resolve()
    (temp / "web/node_modules").mkdir()
    assert node_modules_dir() == Path("web/node_modules")


# ----- the bundle server (python -m commands.serve) ------------------------------------------------------------

@pytest.fixture
def served(tiny):
    """python -m commands.serve on a free port; yields (base URL, process)."""
    proc = subprocess.Popen([sys.executable, "-m", "commands.serve", str(tiny["web"]), "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = re.search(r"http://\S+/", line).group(0)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_server_lists_no_folders_and_answers_odd_paths_quietly(served):
    import urllib.error
    import urllib.request

    url, proc = served

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(url + path, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    with urllib.request.urlopen(url + "vendor/tfjs-backend-wasm-simd.wasm", timeout=10) as r:
        assert r.headers["Content-Type"] == "application/wasm"
    assert status("vendor/") == 404 and status("model/") == 404
    assert status("%00") in (400, 404) and status("a%00b/index.html") in (400, 404)
    assert status("x" * 5000) in (400, 404) and status("%ff%fe.html") in (400, 404)
    assert status("../../../../etc/passwd") == 404
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err


@pytest.mark.parametrize("args,message", [
    (["--port", "99999"], "--port 99999 is not a TCP port"),
    (["--port", "eighty"], "--port 'eighty' is not a number"),
    (["--port", "0", "--host", "192.0.2.1"], "cannot listen on 192.0.2.1:0"),
])
def test_server_options_fail_in_one_line(tiny, args, message):
    res = subprocess.run([sys.executable, "-m", "commands.serve", str(tiny["web"]), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in res.stderr, res.stderr
    if "--host" in args:  # not loopback: a warning before anything else
        assert res.stderr.startswith("warning: listening on 192.0.2.1")


def test_loopback_hosts_need_no_warning():
    from inspection.deploy.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.20", "::", "inspector.plant.local"))


# ----- the page's CSV equals the batch CLI's (needs the whole pipeline) ------------------------------------

def test_page_csv_equals_the_batch_cli(e2e_repo, browser, tmp_path):
    from conftest import HAS_BROWSER, sh
    from inspection.deploy.server import serve, upload

    if not HAS_BROWSER or not (e2e_repo / "models/web/index.html").exists():
        pytest.skip("the web stage needs Chromium")
    manifest = [r.split(",") for r in (e2e_repo / "data/split/manifest.csv").read_text().splitlines()]
    rows = [dict(zip(manifest[0], r)) for r in manifest[1:]]
    test = [r for r in rows if r["split"] == "test"]
    files = list(dict.fromkeys(e2e_repo / r["path"] for r in (test[:3] + [r for r in test if r["label"] == "defect"][:2])))
    junk = tmp_path / "notes_renamed.jpg"
    junk.write_text("not a photo\n")
    files.append(junk)
    out = tmp_path / "cli.csv"
    sh([sys.executable, "-m", "commands.predict", *map(str, files), "--model", str(e2e_repo / "models"), "--out", str(out)],
       e2e_repo)
    cli_rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    meta = json.loads((e2e_repo / "models/web/metadata.json").read_text())
    with serve(e2e_repo / "models/web") as url:
        page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)
        outside = []  # the bundle works offline: any request that leaves the local server fails the test
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                   else (outside.append(route.request.url), route.abort()))
        page.goto(url)
        page.evaluate("() => window.inspector.ready")
        shown = upload(page, files)
        assert page.get_attribute("#banner", "data-route") == shown[-1]["route"] == "RETAKE"
        approval = page.text_content("#approval")   # the report's decision, on the page
        assert (("ready for the line" in approval) if meta["decision"]["ready"] else
                ("NOT approved for the line" in approval and meta["decision"]["sentence"] in approval)), approval
        page.click("#about summary")
        about = page.text_content("#about")
        assert meta["version"] in about and f"{meta['threshold']:.4f}" in about and "backend wasm" in about
        with page.expect_download() as dl:
            page.click("#csv")
        page_text = Path(dl.value.path()).read_text()
        page.close()
    assert not outside, outside
    parity = json.loads((e2e_repo / "reports/export/parity.json").read_text())
    assert parity["route_mismatches"] == 0 and parity["ood_max_rel_diff"] <= parity["ood_tolerance"]
    assert all((e2e_repo / f"reports/export/screenshots/inspector-{w}.png").stat().st_size > 10_000 for w in WIDTHS)
    page_rows = list(csv.DictReader(io.StringIO(page_text, newline="")))
    from inspection.decision.route import CSV_COLUMNS

    assert list(page_rows[0]) == list(cli_rows[0]) == list(CSV_COLUMNS)
    assert len(page_rows) == len(cli_rows) == len(files)
    for p, c in zip(page_rows, cli_rows):
        assert Path(c["file"]).name == p["file"]
        for k in ("route", "reason", "threshold", "camera_check", "brightness", "contrast", "sharpness", "model_version"):
            assert p[k] == c[k], (k, p, c)
        for k in ("defect_probability", "ood_score"):
            assert (p[k] == c[k] == "") or abs(float(p[k]) - float(c[k])) <= 1e-3 * max(1.0, abs(float(c[k]))), (k, p, c)
