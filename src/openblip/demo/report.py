"""What a person looks at: the metrics table (stdout) and the gallery (``gallery.png`` + ``gallery.html``)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from openblip.demo.data import TestData
from openblip.demo.settings import DemoConfig
from openblip.eval import normalize_caption

_LABELS = {
    "caption_exact": "caption exact match",
    "caption_token_acc": "caption token accuracy (teacher-forced)",
    "bleu4": "BLEU-4",
    "cider": "CIDEr",
    "itc_i2t_r1": "ITC image->text R@1",
    "itc_t2i_r1": "ITC text->image R@1",
    "itc_i2t_r5": "ITC image->text R@5",
    "itc_t2i_r5": "ITC text->image R@5",
    "itm_i2t_r1": "ITM re-ranked image->text R@1",
    "itm_t2i_r1": "ITM re-ranked text->image R@1",
    "itm_hardneg_acc": "ITM hard-negative accuracy",
    "vqa_acc": "VQA accuracy",
    "vqa_color_acc": "VQA accuracy, colour questions",
}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def metrics_table(result: dict[str, Any]) -> str:
    """Plain-text table of every metric beside its baseline."""
    from openblip.demo.run import BASELINE_NAMES

    base = result.get("baselines", {})
    rows = [("metric", "key", "model", "baseline", "baseline is")]
    for key, label in _LABELS.items():
        rows.append((label, key, _fmt(result.get(key)), _fmt(base.get(key)), BASELINE_NAMES.get(key, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i in (0, 1, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    cfg = result.get("config", {})
    lines.append("-" * len(lines[0]))
    lines.append(
        f"training: {_vit_part(result)}{result.get('pretrain_steps')} pre-training steps + {result.get('vqa_steps')} "
        f"VQA steps in "
        f"{result.get('train_seconds', 0) / 60:.1f} min on {result.get('machine', {}).get('threads')} threads "
        f"({result.get('pretrain_steps_per_second', 0):.2f} pre-training steps/s); seed {cfg.get('seed')}; "
        f"retrieval over {result.get('n_retrieval')} distinct captions, "
        f"{result.get('n_test_scenes')} test scenes, {result.get('n_test_questions')} test questions"
    )
    lines.append("values are fractions in [0, 1]; BLEU-4 and CIDEr on pycocoevalcap's scale (x100 for percent)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# gallery
# ------------------------------------------------------------------------------------------------------------------

_BG = (250, 250, 247)
_INK = (30, 30, 35)
_GREY = (120, 120, 128)
_GOOD = (20, 130, 60)
_BAD = (190, 40, 40)
_ACCENT = (40, 70, 160)


def _font(size: int, bold: bool = False) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _has_glyph(font: Any, ch: str) -> bool:
    try:
        return "DejaVu" in str(getattr(font, "path", ""))
    except Exception:  # noqa: BLE001
        return False


def _vit_part(result: dict[str, Any]) -> str:
    """``"N supervised ViT steps + "`` when the run had that stage, else ``""``."""
    return f"{result['vit_steps']} supervised ViT steps + " if result.get("vit_steps") else ""


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def _scene_image(root: Path, path: str, side: int) -> Image.Image:
    img = Image.open(root / path).convert("RGB")
    return img.resize((side, side), Image.Resampling.NEAREST)


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pick_vqa_scenes(test: TestData, start: int, count: int) -> list[int]:
    by_scene: dict[int, list[int]] = {}
    for q, i in enumerate(test.vqa_image):
        by_scene.setdefault(i, []).append(q)
    scenes = [i for i in sorted(by_scene) if i >= start] or sorted(by_scene)
    # prefer scenes with 2-3 objects (more to ask about), keep file order
    rich = [i for i in scenes if len(test.scenes[i]["objects"]) >= 2]
    return (rich + [i for i in scenes if i not in rich])[:count]


#: The score :meth:`openblip.tasks.retrieval.Retriever.rank` gives the pairs outside the ITC top-k (not re-ranked).
_NOT_RERANKED = -100.0


def t2i_order(scores: Any, cosine: Any) -> tuple[list[int], set[int]]:
    """One text's full ranking of the images, and the images that ITM re-ranked.

    ``scores`` is the text's row of :attr:`RankResult.t2i` (ITM logit + cosine for the ITC top-k, -100 elsewhere),
    ``cosine`` its ITC cosine column. The ITM-re-ranked images come first, by their score; every other image
    follows by its ITC cosine (their ``scores`` are all -100, so sorting on them alone would order them
    arbitrarily). Ties break on the image index, so the order is deterministic.
    """
    s, c = [float(v) for v in scores], [float(v) for v in cosine]
    reranked = {j for j, v in enumerate(s) if v != _NOT_RERANKED}
    order = sorted(reranked, key=lambda j: (-s[j], j)) + sorted(
        (j for j in range(len(s)) if j not in reranked), key=lambda j: (-c[j], j)
    )
    return order, reranked


def _where(r: dict[str, Any]) -> str:
    """Where the described scene came, in words."""
    if r["target_rank"] == 1:
        return f"the scene it describes came first of {r['pool']}"
    if r.get("target_reranked", True):
        return f"the scene it describes came #{r['target_rank']} of {r['pool']}"
    return (
        f"the scene it describes came #{r['target_rank']} of {r['pool']} by ITC similarity, "
        f"outside the top {r['reranked']} re-ranked by ITM"
    )


def _hit_label(k: int, hit: dict[str, Any]) -> str:
    score = "score" if hit.get("reranked", True) else "ITC"
    return f"#{k + 1}  {score} {hit['score']:.2f}" + ("  (the described scene)" if hit["ok"] else "")


def gallery_content(test: TestData, result: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """The gallery's content, independent of how it is drawn."""
    n = len(test.paths)
    caption_idx = list(range(min(8, n)))
    captions = []
    for i in caption_idx:
        gen = samples["generated"][i]
        ok = normalize_caption(gen) in {normalize_caption(r) for r in test.references[i]}
        captions.append({"index": i, "generated": gen, "ok": ok, "truth": test.references[i][0]})

    ret = samples["retrieval"]
    subset = ret["subset"]
    # the query: the first retrieval text that describes two objects and is not among the caption tiles
    q = next(
        (j for j, s in enumerate(subset) if len(test.scenes[s]["objects"]) == 2 and s not in caption_idx),
        0,
    )
    scores = ret["t2i"][q]
    cosine = ret["cosine"][:, q]
    full_order, reranked = t2i_order(scores, cosine)
    retrieval = {
        "query": ret["texts"][q],
        "target": subset[q],
        "target_rank": full_order.index(q) + 1,
        "target_reranked": q in reranked,
        "reranked": len(reranked),
        "pool": len(subset),
        "top": [
            {
                "index": subset[j],
                "score": float(scores[j] if j in reranked else cosine[j]),
                "reranked": j in reranked,
                "ok": j == q,
            }
            for j in full_order[:5]
        ],
    }

    vqa_scenes = _pick_vqa_scenes(test, max(caption_idx, default=0) + 1, 4)
    vqa = []
    for i in vqa_scenes:
        qa = []
        for k, img in enumerate(test.vqa_image):
            if img == i:
                pred = samples["vqa_predictions"][k]
                truth = test.vqa_answers[k][0]
                qa.append({"question": test.vqa_question[k], "answer": pred, "truth": truth, "ok": pred == truth})
        vqa.append({"index": i, "qa": qa})
    return {"captions": captions, "retrieval": retrieval, "vqa": vqa}


def _headline(result: dict[str, Any]) -> tuple[str, str]:
    cfg = result.get("config", {})
    title = "openblip demo: a small BLIP pre-trained from scratch on a CPU"
    sub = (
        f"{_vit_part(result)}{result.get('pretrain_steps')} pre-training steps (ITC + ITM + LM) + "
        f"{result.get('vqa_steps')} VQA steps, "
        f"{result.get('train_seconds', 0) / 60:.1f} min on {result.get('machine', {}).get('threads')} CPU threads, "
        f"seed {cfg.get('seed')}. Held-out scenes: caption exact {_fmt(result.get('caption_exact'))}, "
        f"ITC R@1 {_fmt(result.get('itc_i2t_r1'))}/{_fmt(result.get('itc_t2i_r1'))}, "
        f"VQA {_fmt(result.get('vqa_acc'))}"
    )
    return title, sub


def render_png(root: Path, content: dict[str, Any], result: dict[str, Any]) -> Image.Image:
    width, margin = 1240, 24
    f_title, f_head, f_text, f_small = _font(26, True), _font(19, True), _font(16), _font(14)
    mark_ok, mark_bad = ("✓", "✗") if _has_glyph(f_text, "✓") else ("+", "x")
    canvas = Image.new("RGB", (width, 2400), _BG)
    d = ImageDraw.Draw(canvas)
    y = margin
    title, sub = _headline(result)
    d.text((margin, y), title, font=f_title, fill=_INK)
    y += 38
    for line in _wrap(d, sub, f_small, width - 2 * margin):
        d.text((margin, y), line, font=f_small, fill=_GREY)
        y += 19
    y += 14

    # 1. captions
    d.text(
        (margin, y), "Captions the model wrote for held-out scenes (beam search, no prompt)", font=f_head, fill=_ACCENT
    )
    y += 32
    cols, side = 4, 192
    tile_w = (width - 2 * margin) // cols
    for row_start in range(0, len(content["captions"]), cols):
        row = content["captions"][row_start : row_start + cols]
        row_h = 0
        for c, item in enumerate(row):
            x = margin + c * tile_w + (tile_w - side) // 2
            img = _scene_image(root, result["_paths"][item["index"]], side)
            canvas.paste(img, (x, y))
            d.rectangle([x - 1, y - 1, x + side, y + side], outline=(200, 200, 200))
            ty = y + side + 8
            color = _GOOD if item["ok"] else _BAD
            text = f"{mark_ok if item['ok'] else mark_bad} {item['generated']}"
            for line in _wrap(d, text, f_text, tile_w - 16)[:4]:
                d.text((margin + c * tile_w + 8, ty), line, font=f_text, fill=color)
                ty += 20
            if not item["ok"]:
                for line in _wrap(d, f"truth: {item['truth']}", f_small, tile_w - 16)[:4]:
                    d.text((margin + c * tile_w + 8, ty), line, font=f_small, fill=_GREY)
                    ty += 18
            row_h = max(row_h, ty - y)
        y += row_h + 18

    # 2. retrieval
    r = content["retrieval"]
    d.text(
        (margin, y),
        "Text -> image search over the held-out scenes (ITC top-k, re-ranked by ITM)",
        font=f_head,
        fill=_ACCENT,
    )
    y += 30
    d.text((margin, y), f'query: "{r["query"]}"', font=f_text, fill=_INK)
    where = f"({_where(r)})"
    x_where = margin + 24 + d.textlength(f'query: "{r["query"]}"', font=f_text)
    if x_where + d.textlength(where, font=f_small) > width - margin:  # too long for the query's line
        x_where, y = margin + 24, y + 22
    d.text((x_where, y + 1), where, font=f_small, fill=_GREY)
    y += 28
    side_r = 176
    tile_r = (width - 2 * margin) // 5
    for k, hit in enumerate(r["top"]):
        x = margin + k * tile_r + (tile_r - side_r) // 2
        canvas.paste(_scene_image(root, result["_paths"][hit["index"]], side_r), (x, y))
        color = _GOOD if hit["ok"] else (200, 200, 200)
        width_px = 4 if hit["ok"] else 1
        d.rectangle(
            [x - width_px, y - width_px, x + side_r + width_px - 1, y + side_r + width_px - 1],
            outline=color,
            width=width_px,
        )
        label = _hit_label(k, hit)
        for j, line in enumerate(_wrap(d, label, f_small, tile_r - 12)[:2]):
            d.text(
                (margin + k * tile_r + 8, y + side_r + 8 + 18 * j),
                line,
                font=f_small,
                fill=_GOOD if hit["ok"] else _GREY,
            )
    y += side_r + 52

    # 3. VQA
    d.text(
        (margin, y),
        "Questions answered (VQA fine-tuned from the pre-trained model; rank over the answer list)",
        font=f_head,
        fill=_ACCENT,
    )
    y += 32
    side_v = 150
    col_w = (width - 2 * margin) // 2
    for n, item in enumerate(content["vqa"]):
        cx = margin + (n % 2) * col_w
        cy = y + (n // 2) * (side_v + 24)
        canvas.paste(_scene_image(root, result["_paths"][item["index"]], side_v), (cx, cy))
        ty = cy + 4
        for qa in item["qa"]:
            d.text((cx + side_v + 14, ty), qa["question"], font=f_small, fill=_INK)
            ty += 18
            ans = f"   {mark_ok if qa['ok'] else mark_bad} {qa['answer']}" + (
                "" if qa["ok"] else f"  (truth: {qa['truth']})"
            )
            d.text((cx + side_v + 14, ty), ans, font=f_text, fill=_GOOD if qa["ok"] else _BAD)
            ty += 22
    rows = (len(content["vqa"]) + 1) // 2
    y += rows * (side_v + 24) + 8
    d.text(
        (margin, y),
        "Scenes are the 64x64 test images, enlarged; the model never saw them during training.",
        font=f_small,
        fill=_GREY,
    )
    y += 24
    return canvas.crop((0, 0, width, y))


def render_html(root: Path, content: dict[str, Any], result: dict[str, Any]) -> str:
    from openblip.demo.run import BASELINE_NAMES

    def img(i: int, side: int, extra: str = "") -> str:
        data = _png_b64(_scene_image(root, result["_paths"][i], side))
        return f'<img src="data:image/png;base64,{data}" width="{side}" height="{side}" {extra}>'

    title, sub = _headline(result)
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>openblip demo</title><style>",
        "body{font-family:system-ui,sans-serif;background:#fafaf7;color:#1e1e23;max-width:1240px;margin:24px auto}",
        ".grid{display:flex;flex-wrap:wrap;gap:16px}.tile{width:290px}.ok{color:#14823c}.bad{color:#be2828}",
        ".muted{color:#78787f;font-size:90%}h2{color:#2846a0;font-size:20px}img{image-rendering:pixelated;",
        "border:1px solid #ccc}.hit img{border:4px solid #14823c}table{border-collapse:collapse}",
        "td,th{padding:2px 10px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}",
        "</style></head><body>",
        f"<h1>{e(title)}</h1><p class='muted'>{e(sub)}</p>",
        "<h2>Captions the model wrote for held-out scenes</h2><div class='grid'>",
    ]
    for item in content["captions"]:
        cls = "ok" if item["ok"] else "bad"
        truth = "" if item["ok"] else f"<div class='muted'>truth: {e(item['truth'])}</div>"
        parts.append(
            f"<div class='tile'>{img(item['index'], 192)}<div class='{cls}'>{'✓' if item['ok'] else '✗'} "
            f"{e(item['generated'])}</div>{truth}</div>"
        )
    r = content["retrieval"]
    parts.append(
        f"</div><h2>Text → image search</h2><p>query: <b>“{e(r['query'])}”</b> <span class='muted'>"
        f"({e(_where(r))})</span></p><div class='grid'>"
    )
    for k, hit in enumerate(r["top"]):
        cls = "tile hit" if hit["ok"] else "tile"
        parts.append(
            f"<div class='{cls}' style='width:190px'>{img(hit['index'], 176)}"
            f"<div class='muted'>{e(_hit_label(k, hit))}</div></div>"
        )
    parts.append("</div><h2>Questions answered (VQA)</h2><div class='grid'>")
    for item in content["vqa"]:
        qa = "".join(
            f"<div>{e(x['question'])} <span class='{'ok' if x['ok'] else 'bad'}'>→ {e(x['answer'])}"
            f"{'' if x['ok'] else ' (truth: ' + e(x['truth']) + ')'}</span></div>"
            for x in item["qa"]
        )
        parts.append(f"<div style='display:flex;gap:12px;width:600px'>{img(item['index'], 150)}<div>{qa}</div></div>")
    parts.append(
        "</div><h2>Metrics on the held-out scenes</h2><table><tr><th>metric</th><th>model</th>"
        "<th>baseline</th><th></th></tr>"
    )
    base = result.get("baselines", {})
    for key, label in _LABELS.items():
        parts.append(
            f"<tr><td>{e(label)}</td><td class='n'>{_fmt(result.get(key))}</td><td class='n'>{_fmt(base.get(key))}"
            f"</td><td class='muted'>{e(BASELINE_NAMES.get(key, ''))}</td></tr>"
        )
    parts.append(
        "</table><p class='muted'>Values are fractions in [0, 1]; BLEU-4 and CIDEr on pycocoevalcap's scale."
        "</p></body></html>"
    )
    return "\n".join(parts)


def write_gallery(out: Path, test: TestData, result: dict[str, Any], samples: dict[str, Any], cfg: DemoConfig) -> None:
    """Write ``gallery.png`` and ``gallery.html`` into ``out``."""
    root = Path(out) / "world"
    content = gallery_content(test, result, samples)
    view = {**result, "_paths": test.paths}
    render_png(root, content, view).save(Path(out) / "gallery.png", optimize=True)
    (Path(out) / "gallery.html").write_text(render_html(root, content, view), encoding="utf-8")
