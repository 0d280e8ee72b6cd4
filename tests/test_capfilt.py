"""CapFilt (`openblip capfilt`): resumable shards, atomic outputs, counts that add up, threshold semantics,
provenance, the CLI, and (slow) the synthetic demo end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import openblip.generation
import openblip.train.steps as S
from openblip.capfilt import CapFiltConfig
from openblip.capfilt import pipeline as P
from openblip.capfilt.store import ShardStore, StageMismatchError, read_jsonl
from openblip.cli import main
from openblip.data.synthetic import generate_world, load_scenes
from openblip.demo.settings import DemoConfig
from openblip.models.blip import create_model

TINY = DemoConfig(
    image_size=48,
    vision_width=32,
    vision_depth=1,
    patch_size=16,
    text_width=32,
    text_layers=1,
    num_heads=2,
    embed_dim=16,
)
QUIET = {"log": lambda m: None, "progress": False}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world, clean/web annotation files (with two unreadable web images) and a tiny pre-trained model."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("capfilt_world")
    generate_world(root / "world", 16, 0, 2, image_size=48, seed=0, n_nlvr=0, vqa_per_scene=1)
    scenes = load_scenes(root / "world", "train")
    clean = [{"image": p, "caption": [s.caption(), s.caption(True)]} for p, s in scenes[:6]]
    web = [{"image": p, "caption": s.caption(i % 2 == 0)} for i, (p, s) in enumerate(scenes[6:])]
    (root / "world" / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    web.insert(3, {"image": "images/missing.png", "caption": "a large red circle"})
    web.insert(7, {"image": "images/broken.png", "caption": "a small blue square"})
    web.append({"image": scenes[6][0], "caption": "a second web caption of the first web image"})
    (root / "clean.json").write_text(json.dumps(clean))
    (root / "web.json").write_text(json.dumps(web))
    torch.manual_seed(0)
    model = create_model(TINY.blip_config("pretrain"))
    model.save_pretrained(root / "init")
    return root


def _cfg(world: Path, out: Path, **kw) -> CapFiltConfig:
    values = dict(
        web=str(world / "web.json"),
        clean=str(world / "clean.json"),
        init=str(world / "init"),
        out=out,
        image_root=str(world / "world"),
        captioner_steps=2,
        filter_steps=2,
        train_batch_size=4,
        queue_size=8,
        shard_size=4,
        batch_size=3,
        captions_per_image=2,
        max_length=10,
        save_every=1,
    )
    values.update(kw)
    return CapFiltConfig(**values)


@pytest.fixture(scope="module")
def models(world):
    """A captioner and a filter fine-tuned (2 steps each) from the tiny model, reused by the stage tests."""
    cfg = _cfg(world, world / "ft")
    P.finetune_captioner(cfg, **QUIET)
    P.finetune_filter(cfg, **QUIET)
    return {
        "captioner": str(world / "ft" / "captioner" / "model"),
        "filter_model": str(world / "ft" / "filter" / "model"),
    }


class _CountGenerate:
    """Counts calls of `openblip.generation.generate`; optionally raises on call number `fail_at` (1-based)."""

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.real = openblip.generation.generate
        monkeypatch.setattr(openblip.generation, "generate", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return self.real(*args, **kwargs)


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*"))}


def test_caption_stage_resumes_without_redoing_work(world, models, tmp_path, monkeypatch):
    web = P.load_web(_cfg(world, tmp_path))
    # 10 scenes + 2 unreadable files; the image with a second web caption is one web image
    assert len(web) == 12 and web[3].image == "images/missing.png" and len(web[0].captions) == 2
    # uninterrupted reference run: 3 shards of 4 web images, sampled in slices of 2 (one generate call each)
    ref = _cfg(world, tmp_path / "ref", batch_size=2, **models)
    counter = _CountGenerate(monkeypatch)
    P.caption(ref, **QUIET)
    assert counter.calls == 6

    # killed in the middle of the second shard (its second generate call)
    cfg = _cfg(world, tmp_path / "run", batch_size=2, **models)
    counter = _CountGenerate(monkeypatch, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        P.caption(cfg, **QUIET)
    store_dir = cfg.out / "captions"
    assert (store_dir / "shard_00000.done").is_file()
    assert not (store_dir / "shard_00001.done").is_file() and not (store_dir / "shard_00001.jsonl").exists()
    assert not list(store_dir.glob(".*.tmp"))  # no temporary file left behind

    counter = _CountGenerate(monkeypatch)
    P.caption(cfg, **QUIET)
    assert counter.calls == 6 - 2  # shard 0 is not redone: nothing done twice
    assert _shards(store_dir) == _shards(ref.out / "captions")  # identical to the uninterrupted run

    counter = _CountGenerate(monkeypatch)
    P.caption(cfg, **QUIET)  # everything done: no work at all
    assert counter.calls == 0


def test_partial_or_tampered_shards_are_redone(world, models, tmp_path, monkeypatch):
    cfg = _cfg(world, tmp_path / "run", **models)
    P.caption(cfg, **QUIET)
    store_dir = cfg.out / "captions"
    good = _shards(store_dir)
    # a shard written without its marker (crash before the marker) and a marked shard whose file changed
    (store_dir / "shard_00001.done").unlink()
    (store_dir / "shard_00001.jsonl").write_text('{"web_id": 4, "image": "half a row')
    (store_dir / "shard_00002.jsonl").write_text("")
    counter = _CountGenerate(monkeypatch)
    P.caption(cfg, **QUIET)
    assert counter.calls > 0
    assert _shards(store_dir) == good

    store = ShardStore(store_dir, json.loads((store_dir / "params.json").read_text()), "caption")
    assert all(store.is_done(i) for i in range(3))
    # other settings are refused rather than mixed with the finished shards
    with pytest.raises(StageMismatchError, match="seed"):
        P.caption(cfg.replace(seed=1), **QUIET)


def test_counts_add_up_with_unreadable_images(world, models, tmp_path):
    cfg = _cfg(world, tmp_path / "run", threshold=0.0, **models)  # threshold 0: the filter keeps everything
    for stage in ("caption", "filter", "build"):
        P.run_stage(stage, cfg, **QUIET)
    summary = json.loads((cfg.out / "summary.json").read_text())
    corpus = json.loads((cfg.out / "corpus.json").read_text())

    reasons = {f["image"]: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"images/missing.png", "images/broken.png"}
    assert "not found" in reasons["images/missing.png"]
    assert reasons["images/broken.png"]
    assert not any("missing.png" in e["image"] or "broken.png" in e["image"] for e in corpus)

    ps = summary["per_source"]
    for counts in ps.values():
        assert counts["in"] == sum(v for k, v in counts.items() if k != "in")
    assert summary["inputs"]["web_captions"] == 13 == ps["web"]["in"]  # 12 records + 1 extra caption, all counted
    assert ps["web"]["dropped_unreadable"] == 2
    assert ps["clean"]["in"] == 12 and ps["clean"]["kept"] == 12
    assert ps["synthetic"]["in"] == summary["inputs"]["synthetic_expected"] == 2 * 10
    im = summary["images"]
    assert im["web_in"] == 12 and im["web_unreadable"] == 2
    assert im["web_unreadable"] + im["web_with_kept_caption"] + im["web_all_dropped"] == im["web_in"]
    assert len(corpus) == sum(c["kept"] for c in ps.values())
    assert summary["counts_add_up"] is True


def test_threshold_semantics_and_provenance(world, models, tmp_path, monkeypatch):
    """Kept iff ITM match probability >= threshold, for web and synthetic captions; mocked filter scores."""

    def fake_probs(model, images, texts, max_text_length=35):
        return [[[0.2, 0.5, 0.8][(i + j) % 3] for j in range(len(ts))] for i, ts in enumerate(texts)]

    monkeypatch.setattr(P, "itm_match_probs", fake_probs)
    cfg = _cfg(world, tmp_path / "run", dedup=False, **models)
    for stage in ("caption", "filter", "build"):
        P.run_stage(stage, cfg, **QUIET)
    corpus = json.loads((cfg.out / "corpus.json").read_text())
    web_entries = [e for e in corpus if e["source"] != "clean"]
    assert web_entries and all(e["itm_prob"] >= 0.5 for e in web_entries)  # 0.5 itself is kept
    rows = [r for f in sorted((cfg.out / "filter_scores").glob("shard_*.jsonl")) for r in read_jsonl(f)]
    scores = [s for r in rows if "scores" in r for s in r["scores"] if s["source"] == "web" or s["caption"].strip()]
    assert len(web_entries) == sum(s["itm_prob"] >= 0.5 for s in scores)
    assert {e["source"] for e in corpus} == {"clean", "web", "synthetic"}
    web = P.load_web(cfg)
    for e in web_entries:
        assert set(e) >= {"image", "caption", "source", "itm_prob", "web_id"}
        item = web[e["web_id"]]
        assert e["image"] == str(Path(cfg.image_root) / item.image)
        assert (e["caption"] in item.captions) == (e["source"] == "web")
    for e in corpus:
        if e["source"] == "clean":
            assert e["itm_prob"] is None and e["web_id"] is None

    # a new threshold only needs the build stage: nothing is scored again
    monkeypatch.setattr(P, "itm_match_probs", None)
    summary = P.build(cfg.replace(threshold=0.8), **QUIET)
    assert summary["per_source"]["web"]["kept"] + summary["per_source"]["synthetic"]["kept"] == sum(
        s["itm_prob"] >= 0.8 for s in scores
    )
    summary = P.build(cfg.replace(threshold=0.8, filter_web=False), **QUIET)
    assert summary["per_source"]["web"]["kept"] == 11  # every readable web caption
    assert summary["per_source"]["web"]["dropped_filter"] == 0


def test_ready_made_models_need_no_clean_set(world, models, tmp_path, monkeypatch):
    monkeypatch.setattr(
        P, "itm_match_probs", lambda m, images, texts, max_text_length=35: [[0.9] * len(t) for t in texts]
    )
    cfg = _cfg(world, tmp_path / "run", clean=None, init=None, **models)
    summary = P.run(cfg, **QUIET)
    assert summary["per_source"]["clean"]["in"] == 0 and summary["corpus"]["by_source"]["clean"] == 0
    assert summary["per_source"]["web"]["kept"] > 0 and (cfg.out / "corpus.json").is_file()


def test_a_refused_stage_keeps_the_saved_settings(world, models, tmp_path):
    cfg = _cfg(world, tmp_path / "run", **models)
    P.run_stage("caption", cfg, **QUIET)
    saved = (cfg.out / "capfilt_config.json").read_text()
    for changed in (cfg.replace(seed=1), cfg.replace(dtype="bfloat16")):
        with pytest.raises(StageMismatchError):
            P.run_stage("caption", changed, **QUIET)
        assert (cfg.out / "capfilt_config.json").read_text() == saved


def test_one_image_file_is_one_web_image_and_empty_web_captions_are_dropped(world, models, tmp_path, monkeypatch):
    scene = "images/train/" + sorted((world / "world" / "images" / "train").iterdir())[0].name
    web = [
        {"image": scene, "caption": "a red square"},
        {"image": "./" + scene, "caption": ["", "a blue circle"]},
        {"image": str(world / "world" / scene), "caption": "a red square"},
    ]
    (tmp_path / "web.json").write_text(json.dumps(web))
    cfg = _cfg(
        world, tmp_path / "run", web=str(tmp_path / "web.json"), captions_per_image=0, filter_web=False, **models
    )
    items = P.load_web(cfg)
    assert len(items) == 1 and items[0].captions == ["a red square", "", "a blue circle", "a red square"]
    monkeypatch.setattr(
        P, "itm_match_probs", lambda m, images, texts, max_text_length=35: [[0.9] * len(t) for t in texts]
    )
    summary = P.run(cfg.replace(clean=None), **QUIET)
    web_counts = summary["per_source"]["web"]
    assert web_counts == {**web_counts, "in": 4, "kept": 2, "dropped_empty": 1, "dropped_duplicate": 1}
    corpus = [e for e in json.loads((cfg.out / "corpus.json").read_text()) if e["source"] == "web"]
    assert sorted(e["caption"] for e in corpus) == ["a blue circle", "a red square"]


def test_finetuning_refuses_other_data_or_hyperparameters(world, tmp_path):
    cfg = _cfg(world, tmp_path / "run", captioner_steps=1)
    P.finetune_captioner(cfg, **QUIET)
    for changed in (cfg.replace(weight_decay=0.5), cfg.replace(image_root=str(tmp_path))):
        with pytest.raises(StageMismatchError):
            P.finetune_captioner(changed, **QUIET)


def test_a_caption_that_is_not_text_is_a_clear_error(world, tmp_path):
    (tmp_path / "web.json").write_text(json.dumps([{"image": "a.png", "caption": None}]))
    with pytest.raises(ValueError, match="record 0.*'caption' must be a string or a list of strings"):
        P.load_web(_cfg(world, tmp_path / "run", web=str(tmp_path / "web.json")))


def test_finetune_resumes_from_its_training_state(world, tmp_path, monkeypatch):
    cfg = _cfg(world, tmp_path / "ref", save_every=2)
    P.finetune_filter(cfg.replace(filter_steps=4), **QUIET)
    ref = (cfg.out / "filter" / "model" / "model.safetensors").read_bytes()

    run = cfg.replace(out=tmp_path / "run", filter_steps=4)
    calls = {"n": 0}
    real = S.forward

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "forward", crashing)
    with pytest.raises(KeyboardInterrupt):
        P.finetune_filter(run, **QUIET)
    assert (run.out / "filter" / "train_state.pt").is_file() and not (run.out / "filter" / "done.json").is_file()
    monkeypatch.setattr(S, "forward", real)
    P.finetune_filter(run, **QUIET)
    assert (run.out / "filter" / "model" / "model.safetensors").read_bytes() == ref  # resumed at step 2, same result
    assert not (run.out / "filter" / "train_state.pt").exists()


def test_cli_help():
    runner = CliRunner()
    res = runner.invoke(main, ["capfilt", "--help"])
    assert res.exit_code == 0 and "--threshold" in res.output and "--demo" in res.output
    for stage in P.STAGES:
        res = runner.invoke(main, ["capfilt", stage, "--help"])
        assert res.exit_code == 0, (stage, res.output)
        assert "--out" in res.output
    res = runner.invoke(main, ["capfilt", "--web", "x.json"])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(main, ["capfilt", "--out", "o", "--queue-size", "10", "--train-batch-size", "4"])
    assert res.exit_code == 2 and "multiple" in res.output


def test_cli_end_to_end(world, tmp_path):
    """`openblip capfilt` on a few images: every stage, the summary table, exit code 3 (two unreadable images);
    then a stage alone reuses the saved settings and redoes nothing."""
    out = tmp_path / "out"
    args = [
        "capfilt",
        "--web", str(world / "web.json"),
        "--clean", str(world / "clean.json"),
        "--init", str(world / "init"),
        "--image-root", str(world / "world"),
        "--out", str(out),
        "--captioner-steps", "1",
        "--filter-steps", "1",
        "--train-batch-size", "4",
        "--queue-size", "8",
        "--shard-size", "5",
        "--batch-size", "4",
        "--max-length", "10",
        "--threshold", "0.3",
    ]  # fmt: skip
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 3, res.output
    assert "synthetic" in res.stdout and "unreadable" in res.stdout and "images/missing.png" in res.stdout
    for name in ("corpus.json", "summary.json", "capfilt_config.json", "captioner/model/config.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "filter_scores").glob("shard_*.done"))) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] == 0.3 and summary["captions_per_image"] == 1

    before = _shards(out / "captions")
    res = CliRunner().invoke(main, ["capfilt", "caption", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 3, res.output  # the two unreadable web images, counted from the skipped shards
    assert json.loads(res.stdout)["skipped"] == 3 and json.loads(res.stdout)["failed"] == 2
    assert _shards(out / "captions") == before
    res = CliRunner().invoke(main, ["capfilt", "build", "--out", str(out), "--threshold", "0.9"])
    assert res.exit_code == 3 and json.loads((out / "summary.json").read_text())["threshold"] == 0.9


def _stage_args(world: Path, out: Path, models: dict, web: Path | None = None) -> list[str]:
    """The group options of a run on the test world with the ready-made (fine-tuned) models: no fine-tuning."""
    return [
        "capfilt",
        "--web", str(web or world / "web.json"),
        "--captioner", models["captioner"],
        "--filter-model", models["filter_model"],
        "--image-root", str(world / "world"),
        "--out", str(out),
        "--shard-size", "5",
        "--batch-size", "4",
        "--max-length", "10",
    ]  # fmt: skip


def test_cli_single_stages_exit_3_and_count_the_unreadable_web_images(world, models, tmp_path):
    """`capfilt caption` / `filter` alone: 2 of the 12 web images are unreadable, so exit 3 with `failed` 2 in the
    stats (over every shard of the stage: a rerun that skips them all reports the same), and a line on stderr."""
    out = tmp_path / "out"
    runner = CliRunner()
    for stage, folder in (("caption", "captions"), ("filter", "filter_scores")):
        for attempt in ("first", "rerun"):
            res = runner.invoke(main, [*_stage_args(world, out, models), stage])
            assert res.exit_code == 3, (stage, attempt, res.output)
            stats = json.loads(res.stdout)
            assert stats["images"] == 12 and stats["failed"] == 2, (stage, attempt, stats)
            assert stats["skipped"] == (0 if attempt == "first" else 3)
            assert "2 of 12 web images failed to load" in res.stderr and folder in res.stderr
            assert "Traceback" not in res.output
    # error rows on disk match the count
    rows = [r for f in sorted((out / "filter_scores").glob("shard_*.jsonl")) for r in read_jsonl(f)]
    assert sorted(r["image"] for r in rows if "error" in r) == ["images/broken.png", "images/missing.png"]
    res = runner.invoke(main, [*_stage_args(world, out, models), "build"])
    assert res.exit_code == 3, res.output


def test_pipeline_stage_stats_count_failed_images(world, models, tmp_path):
    cfg = _cfg(world, tmp_path / "run", **models)
    first = P.caption(cfg, **QUIET)
    assert first == {"shards": 3, "skipped": 0, "done": 3, "images": 12, "failed": 2}
    (cfg.out / "captions" / "shard_00002.done").unlink()  # one shard redone, two read back
    again = P.caption(cfg, **QUIET)
    assert again == {"shards": 3, "skipped": 2, "done": 1, "images": 12, "failed": 2}
    assert P.filter_captions(cfg, **QUIET)["failed"] == 2


def test_cli_every_web_image_unreadable_is_exit_1(world, models, tmp_path):
    """Every web image missing: each of caption, filter, build and the whole run exits 1 (total failure), not 3."""
    web = tmp_path / "web.json"
    web.write_text(json.dumps([{"image": "images/missing.png", "caption": "a"}, {"image": "gone.png", "caption": "b"}]))
    runner = CliRunner()
    res = runner.invoke(main, _stage_args(world, tmp_path / "all", models, web))
    assert res.exit_code == 1, res.output
    assert "error: every web image failed to load (2 of 2)" in res.stderr
    assert "2 unreadable" in res.stdout  # the summary table is still printed
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["images"]["web_unreadable"] == summary["images"]["web_in"] == 2
    res = runner.invoke(main, ["capfilt", "build", "--out", str(tmp_path / "all")])  # the saved settings
    assert res.exit_code == 1, res.output

    out = tmp_path / "stages"
    for stage in ("caption", "filter", "build"):
        res = runner.invoke(main, [*_stage_args(world, out, models, web), stage])
        assert res.exit_code == 1, (stage, res.output)
        assert "error: every web image failed to load (2 of 2)" in res.stderr, stage
        assert "Traceback" not in res.output


def test_cli_missing_options_and_malformed_annotations_are_usage_errors(world, models, tmp_path):
    """Exit 2 with one `error:` line naming the option, file or record, before any work (no traceback)."""
    runner = CliRunner()
    init, clean = ["--init", str(world / "init")], ["--clean", str(world / "clean.json")]

    def usage_error(args, *expected):
        res = runner.invoke(main, ["capfilt", *args])
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, res.stderr
        for text in expected:
            assert text in res.stderr, (args, text, res.stderr)
        assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output

    out = str(tmp_path / "o7")
    for stage in ("caption", "filter", "build"):
        usage_error([stage, "--out", out], "--web")
    usage_error(["finetune-captioner", "--out", out, *clean], "--init")
    usage_error(["finetune-captioner", "--out", out, *init], "--clean")
    usage_error(["finetune-filter", "--out", out, *clean], "--init")
    usage_error(["finetune-filter", "--out", out, *init], "--clean")
    # the whole run with a clean set but nothing to fine-tune from
    usage_error(["--web", str(world / "web.json"), *clean, "--out", out], "--init")
    assert not (tmp_path / "o7" / "captioner").exists()  # nothing was done

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "a.png", "caption": "fine"}, {"image": "b.png", "caption": None}]))
    usage_error(["caption", "--web", str(bad), "--captioner", models["captioner"], "--out", out], "record 1", "caption")
    usage_error([*_stage_args(world, tmp_path / "o8", models, bad)[1:]], str(bad), "record 1")
    usage_error(["finetune-filter", "--out", out, *init, "--clean", str(bad)], str(bad), "record 1")
    notjson = tmp_path / "notjson.json"
    notjson.write_text("[{")
    usage_error(["caption", "--web", str(notjson), "--out", out], str(notjson))
    usage_error(["caption", "--web", str(tmp_path / "nope.json"), "--out", out], "nope.json", "--web")

    # a ready-made model needs neither --init nor --clean
    res = runner.invoke(main, ["capfilt", "finetune-captioner", "--out", out, "--captioner", models["captioner"]])
    assert res.exit_code == 0, res.output


def test_demo_tiny_end_to_end(tmp_path):
    """The demo's code path on a tiny world and model (seconds): world with wrong and unreadable web captions, noisy
    model, CapFilt, bootstrapped model, held-out metrics; a rerun reuses every finished piece."""
    from openblip.capfilt.demo import metrics_table, preset, run_demo

    tiny = {f: getattr(TINY, f) for f in ("vision_width", "vision_depth", "patch_size", "text_width", "text_layers")}
    tiny.update(num_heads=2, embed_dim=16, batch_size=8, queue_size=16, log_every=1)
    cfg = preset(
        "quick",
        out=tmp_path / "demo",
        threads=1,
        n_clean=8,
        n_web=20,
        n_test=6,
        n_retrieval=4,
        image_size=48,
        pretrain_steps=2,
        pretrain=tiny,
        vit_steps=1,
        captioner_steps=1,
        filter_steps=1,
        itm_warmup_steps=1,
        train_batch_size=4,
        queue_size=8,
        batch_size=8,
        shard_size=8,
    )
    m = run_demo(cfg, log=lambda msg: None)
    truth = json.loads((cfg.out / "world" / "annotations" / "capfilt_web_truth.json").read_text())
    kinds = [r["kind"] for r in truth["web"]]
    assert kinds.count(None) == 12 and kinds.count("broken") == 2  # 40% of 20 wrong, + 2 unreadable files
    assert set(kinds) - {None, "broken"} <= {"attribute", "swap", "other_scene"}
    from openblip.data.synthetic import Scene, caption_is_true

    for r in truth["web"]:
        if r["scene"] is not None:
            assert caption_is_true(Scene.from_dict(r["scene"]), r["caption"]) == r["correct"]
    for key in ("filter_wrong_removed", "filter_correct_kept"):
        assert 0.0 <= m[key] <= 1.0
    if m["filter"]["synthetic_kept"]:
        assert 0.0 <= m["synthetic_correct"] <= 1.0
    else:  # no synthetic caption kept: no fraction, and the bar on it does not hold
        assert m["synthetic_correct"] is None and not m["bars"]["synthetic_correct"]["holds"]
        assert "no synthetic caption kept" in metrics_table(m)
    saved = json.loads((cfg.out / "capfilt_metrics.json").read_text())
    assert saved["synthetic_correct"] == m["synthetic_correct"]
    for model in ("noisy_model", "bootstrapped_model"):
        assert {"itc_i2t_r1", "itc_t2i_r1", "caption_exact", "caption_token_acc"} <= set(m[model])
    assert json.loads((cfg.out / "capfilt_metrics.json").read_text())["bars"].keys() == m["bars"].keys()
    assert "noisy" in metrics_table(m)
    # the supervised ViT stage saw the clean scenes only (the web scenes' annotations are the filter's answer key)
    assert m["pretrain"]["vit"]["steps"] == 1 and m["pretrain"]["vit"]["scenes"] == 8
    assert (cfg.out / "vit_init" / "vit.safetensors").is_file()
    assert saved["pretrain"]["vit"]["digest"] == m["pretrain"]["vit"]["digest"]
    m2 = run_demo(cfg, log=lambda msg: None)  # everything reused: same numbers
    assert m2["pretrain"]["vit"]["reused"]
    assert m2["pretrain"]["noisy"]["reused"] and m2["pretrain"]["bootstrapped"]["reused"]
    assert m2["noisy_model"] == m["noisy_model"] and m2["filter"] == m["filter"]


def test_demo_models_start_from_the_supervised_vit(tmp_path):
    """Both pre-trainings start from the ViT of the supervised stage: with no pre-training step the saved models'
    image encoders are exactly the stage's weights; and a different ViT means a different model (not reused)."""
    from safetensors.torch import load_file, save_file

    from openblip.capfilt.demo import _pretrain, _train_data, _vit_stage, preset

    tiny = {f: getattr(TINY, f) for f in ("vision_width", "vision_depth", "patch_size", "text_width", "text_layers")}
    tiny.update(num_heads=2, embed_dim=16, batch_size=4, queue_size=8, log_every=1)
    cfg = preset("default", out=tmp_path, n_clean=4, n_web=2, n_test=2, image_size=48, vit_steps=2, pretrain=tiny)
    cfg = cfg.replace(pretrain_steps=0)
    from openblip.capfilt.demo import make_world

    root, _ = make_world(cfg, lambda m: None)
    clean = json.loads((root / "annotations" / "capfilt_clean.json").read_text())
    dcfg = cfg.demo_config()
    stats = _vit_stage(dcfg, root, clean, tmp_path / "vit", lambda m: None)
    assert stats["scenes"] == 4 and not stats["reused"]
    vit = tmp_path / "vit" / "vit.safetensors"
    weights = load_file(str(vit))
    data = _train_data(root, {e["image"]: [e["caption"]] for e in clean}, cfg.image_size, lambda m: None)
    model, _ = _pretrain("m", dcfg, data, tmp_path / "m", lambda m: None, vit, stats["digest"])
    for k, v in model.visual_encoder.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert _vit_stage(dcfg, root, clean, tmp_path / "vit", lambda m: None)["reused"]
    save_file({k: v + 1 for k, v in weights.items()}, str(tmp_path / "other.safetensors"))
    _, again = _pretrain("m", dcfg, data, tmp_path / "m", lambda m: None, vit, stats["digest"])
    _, other = _pretrain("m", dcfg, data, tmp_path / "m", lambda m: None, tmp_path / "other.safetensors", "x")
    assert again["reused"] and not other["reused"]


def test_demo_preset_merges_pretrain_overrides():
    """A `pretrain` override adds to the preset's own pre-training settings instead of replacing them."""
    from openblip.capfilt.demo import preset

    cfg = preset("quick", pretrain={"batch_size": 8})
    assert cfg.pretrain["batch_size"] == 8 and cfg.pretrain["text_dropout"] == 0.1
    assert cfg.demo_config().text_dropout == 0.1 and cfg.demo_config().vit_steps == 0
    d = preset("default").demo_config()
    assert d.vit_steps == 600 and d.text_dropout == 0.0 and d.steps == 800


# The bars for this demo are not met yet (measured and reported on the issue); the bar test
# `test_demo_quick_bars` is kept out of the suite until they are, rather than committed failing or weakened.
# The slow test below is not that test: it checks only what the quick demo was measured to deliver.


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path):
    """`openblip capfilt --demo --quick` end to end (1 thread; about 8 minutes on the 2-core AVX-512 machine, 16.5 on
    a 2-core AVX2 one).

    NOT the issue's bars: none of them holds for `--quick`; for the default `--demo` the bootstrapped model beats the
    noisy one on held-out retrieval with seeds 0 and 1 but none of the three filter bars holds (measured values in
    the README section "CapFilt: bootstrapping your own data"). `--quick` measured at
    seed 0: filter_wrong_removed 0.880, filter_correct_kept 0.193, synthetic_correct 0.0 (measured when "no synthetic
    caption kept" was also written 0.0; it is null now in that case, not re-measured), and the bootstrapped
    model does not beat the noisy one (ITC R@1 i2t/t2i 0.025/0.015 vs 0.030/0.015). Asserted here, as measured:
    the pipeline runs, the accounting adds up, the filter removes a larger share of the wrong web captions than of
    the correct ones, and the bootstrapped corpus holds a larger share of true captions than the noisy one (88% vs
    78%).
    """
    from openblip.capfilt.demo import preset, run_demo

    m = run_demo(preset("quick", out=tmp_path / "demo", threads=1), log=lambda msg: None)
    saved = json.loads((tmp_path / "demo" / "capfilt_metrics.json").read_text())
    for key in (
        "filter_wrong_removed",
        "filter_correct_kept",
        "synthetic_correct",
        "noisy_model",
        "bootstrapped_model",
    ):
        assert key in saved, key
    for model in ("noisy_model", "bootstrapped_model"):
        for key in ("itc_i2t_r1", "itc_t2i_r1", "caption_exact", "caption_token_acc"):
            assert 0.0 <= saved[model][key] <= 1.0
    summary = json.loads((tmp_path / "demo" / "capfilt" / "summary.json").read_text())
    assert summary["counts_add_up"] and summary["images"]["web_unreadable"] == 2 and len(summary["failures"]) == 2
    assert m["filter_wrong_removed"] > 1.0 - m["filter_correct_kept"]
    assert m["corpora"]["bootstrapped"]["true_fraction"] > m["corpora"]["noisy"]["true_fraction"]


def _fake_filter_scores(tmp_path, synthetic_probs):
    """Two web images with stored filter scores: per image one correct/wrong web caption and two synthetic captions
    (one true of its scene, one not), scored ``synthetic_probs[image]``; returns the config and the truth."""
    from openblip.data.synthetic import sample_scene

    scenes = [sample_scene(0), sample_scene(1)]
    (tmp_path / "web.json").write_text(
        json.dumps([{"image": f"w{i}.png", "caption": s.caption()} for i, s in enumerate(scenes)])
    )
    truth = {
        "web": [
            {"image": f"w{i}.png", "scene": s.to_dict(), "correct": i == 0, "kind": None if i == 0 else "attribute"}
            for i, s in enumerate(scenes)
        ]
    }
    folder = tmp_path / "cf" / "filter_scores"
    folder.mkdir(parents=True)
    rows = []
    for i, s in enumerate(scenes):
        true_cap, false_cap = s.caption(True), scenes[1 - i].caption()
        rows.append(
            {
                "web_id": i,
                "scores": [
                    {"source": "web", "caption": s.caption(), "itm_prob": 0.9},
                    {"source": "synthetic", "caption": true_cap, "itm_prob": synthetic_probs[i][0]},
                    {"source": "synthetic", "caption": false_cap, "itm_prob": synthetic_probs[i][1]},
                ],
            }
        )
    (folder / "shard_00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return CapFiltConfig(web=str(tmp_path / "web.json"), out=tmp_path / "cf", shard_size=8, threshold=0.5), truth


def test_demo_synthetic_correct_is_null_when_no_synthetic_caption_is_kept(tmp_path):
    """With every synthetic caption removed there is no fraction of correct survivors: `synthetic_correct` is None
    (JSON null), not 0.0 (which would read as "every kept caption was wrong"), its bar does not hold, and the
    printed summary says that none was kept."""
    from openblip.capfilt.demo import filter_metrics, metrics_table

    cfg, truth = _fake_filter_scores(tmp_path, [(0.1, 0.2), (0.3, 0.4)])
    fm = filter_metrics(cfg, truth)
    assert fm["synthetic_total"] == 4 and fm["synthetic_kept"] == 0
    assert fm["synthetic_correct"] is None and fm["synthetic_correct_before_filter"] == 0.5
    assert json.loads(json.dumps(fm))["synthetic_correct"] is None

    from openblip.capfilt.demo import TABLE_METRICS, _bar  # the bars of run_demo

    bar = _bar(fm["synthetic_correct"], 0.9)
    assert bar == {"value": None, "min": 0.9, "holds": False}
    model = dict.fromkeys(TABLE_METRICS, 0.5)
    result = {
        **{k: fm[k] for k in ("filter_wrong_removed", "filter_correct_kept", "synthetic_correct")},
        "filter": fm,
        "corpora": {
            "noisy": {"captions": 4, "true_fraction": 0.5},
            "bootstrapped": {"captions": 2, "true_fraction": 1},
        },
        "noisy_model": model,
        "bootstrapped_model": model,
        "bars": {"synthetic_correct": bar},
    }
    table = metrics_table(result)
    assert "no synthetic caption kept (the filter removed all 4; correct before filtering: 50.0%)" in table
    assert "survive are correct" not in table and "FAIL  synthetic_correct" in table


@pytest.mark.parametrize("probs, expected", [([(0.9, 0.1), (0.1, 0.1)], 1.0), ([(0.9, 0.9), (0.1, 0.8)], 1 / 3)])
def test_demo_synthetic_correct_counts_the_kept_synthetic_captions(tmp_path, probs, expected):
    from openblip.capfilt.demo import _bar, filter_metrics

    cfg, truth = _fake_filter_scores(tmp_path, probs)
    fm = filter_metrics(cfg, truth)
    assert fm["synthetic_correct"] == pytest.approx(expected)
    assert fm["filter_correct_kept"] == 1.0 and fm["filter_wrong_removed"] == 0.0
    assert _bar(fm["synthetic_correct"], 0.9)["holds"] == (expected >= 0.9)


def test_shard_store_atomic_write(tmp_path):
    store = ShardStore(tmp_path / "s", {"a": 1}, "test")
    store.write(0, [{"x": 1}, {"x": 2}])
    assert store.is_done(0) and store.read(0) == [{"x": 1}, {"x": 2}]
    assert not list((tmp_path / "s").glob(".*"))
    with pytest.raises(FileNotFoundError):
        store.read(1)
    with pytest.raises(StageMismatchError):
        ShardStore(tmp_path / "s", {"a": 2}, "test")
    shutil.rmtree(tmp_path / "s")


def test_web_annotations_are_parsed_and_hashed_once_while_unchanged(world, tmp_path, monkeypatch):
    import os

    import openblip.data.datasets as D

    web = tmp_path / "web.json"
    web.write_text(json.dumps([{"image": "a.png", "caption": "a red square"}]))
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"image": "b.png", "caption": "a blue circle"}]))
    parses, hashes = [], []
    real_load, real_hash = D.load_annotations, P.file_sha256
    monkeypatch.setattr(D, "load_annotations", lambda spec: parses.append(spec) or real_load(spec))
    monkeypatch.setattr(P, "file_sha256", lambda path: hashes.append(path) or real_hash(path))
    cfg = _cfg(world, tmp_path / "run", web=str(web))
    first = P.load_web(cfg)
    first[0].captions.append("changed by a caller")  # callers get their own lists
    assert [i.captions for i in P.load_web(cfg)] == [["a red square"]] and len(parses) == 1
    assert P._annotation_digest(cfg.web) == P._annotation_digest(cfg.web) and len(hashes) == 1

    web.write_text(json.dumps([{"image": "a.png", "caption": "a green triangle"}]))  # same size: mtime tells
    os.utime(web, ns=(os.stat(web).st_atime_ns, os.stat(web).st_mtime_ns + 1_000_000))
    assert [i.captions for i in P.load_web(cfg)] == [["a green triangle"]] and len(parses) == 2

    # a list of files is identified by every file's content, not by the list's text
    both = [str(web), str(other)]
    before = P._annotation_digest(both)
    other.write_text(json.dumps([{"image": "b.png", "caption": "a big blue circle"}]))
    after = P._annotation_digest(both)
    assert isinstance(before, list) and len(before) == 2 and before[0] == after[0] and before[1] != after[1]
