"""`openblip demo`: the end-to-end pipeline on a tiny world (fast) and the `--quick` quality bars (slow)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

import openblip
import openblip.demo
from openblip.cli import main
from openblip.demo import METRIC_KEYS, DemoConfig, preset_config
from openblip.demo.data import flip_batch
from openblip.demo.train import lr_at
from openblip.models.blip import create_model

TINY = {
    "n_train": 48,
    "n_test": 24,
    "n_retrieval": 20,
    "batch_size": 8,
    "queue_size": 32,
    "vqa_batch_size": 8,
    "log_every": 1,
    "vision_depth": 1,
    "text_layers": 1,
    "itm_k": 4,
}


def test_demo_end_to_end_tiny(tmp_path, monkeypatch):
    """`openblip demo` with a handful of steps on a tiny world: every output exists, the saved model captions."""
    real = openblip.demo.preset_config
    monkeypatch.setattr(openblip.demo, "preset_config", lambda name, **kw: real(name, **kw).replace(**TINY))
    out = tmp_path / "demo"
    res = CliRunner().invoke(
        main,
        ["demo", "--out", str(out), "--steps", "3", "--vqa-steps", "2", "--vit-steps", "2", "--seed", "1"]
        + ["--no-coco-metrics"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "ITC image->text R@1" in res.stdout and "baseline" in res.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
    for key in METRIC_KEYS:
        if key not in ("bleu4", "cider"):  # skipped with --no-coco-metrics
            assert isinstance(metrics[key], (int, float)), key
    assert metrics["train_steps"] == 7 and metrics["pretrain_steps"] == 3 and metrics["vqa_steps"] == 2
    assert metrics["vit_steps"] == 2 and 0 <= metrics["vit_final_shape_acc"] <= 1
    assert "2 supervised ViT steps + 3 pre-training steps" in res.stdout
    assert 0 <= metrics["itc_i2t_r1"] <= metrics["itc_i2t_r5"] <= 1
    assert metrics["n_retrieval"] == 20
    for name in ("gallery.png", "gallery.html", "world/world.json"):
        assert (out / name).is_file(), name
    assert "data:image/png;base64," in (out / "gallery.html").read_text()

    scene = next((out / "world" / "images" / "test").glob("*.png"))
    res = CliRunner().invoke(main, ["caption", "--model", str(out / "model"), str(scene)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[0])
    assert row["error"] is None and isinstance(row["caption"], str) and row["caption"].strip()
    res = CliRunner().invoke(
        main,
        ["match", "--model", str(out / "retrieval_model"), str(scene), "a large red circle"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0 and 0 <= json.loads(res.stdout)["itm_prob"] <= 1, res.output
    answers = out / "world" / "annotations" / "answer_list.json"
    args = ["vqa", "--model", str(out / "vqa_model"), "--method", "rank", "--answers", str(answers), str(scene)]
    res = CliRunner().invoke(main, [*args, "how many objects are there?"], catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.stdout)["answer"] in json.loads(answers.read_text()), res.output
    assert openblip.load(out / "pretrain_model").task == "pretrain"

    # a second run in the same folder reuses the world
    shutil.rmtree(out / "model")
    metrics2 = openblip.demo.run_demo(
        preset_config("quick", out=out, steps=2, vqa_steps=0, seed=1, coco_metrics=False, gallery=False).replace(
            **TINY
        ),
        log=lambda m: None,
    )
    assert metrics2["pretrain_steps"] == 2 and (out / "model" / "config.json").is_file()


def test_demo_vqa_questions_per_image(tmp_path):
    """VQA fine-tuning with several questions per scene runs and learns the same kind of model."""
    from openblip.demo.data import load_train, prepare_world
    from openblip.demo.train import finetune_vqa

    cfg = preset_config("quick", out=tmp_path, vqa_steps=3, vqa_questions_per_image=4).replace(**TINY)
    info, _ = prepare_world(tmp_path / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)
    vqa = create_model(cfg.blip_config("vqa"))
    before = {k: v.clone() for k, v in vqa.state_dict().items()}
    lines = []
    stats = finetune_vqa(vqa, cfg, load_train(info), lines.append)
    assert stats["steps"] == 3 and len(lines) == 3 and stats["final_loss_vqa"] > 0
    assert any(not torch.equal(before[k], v) for k, v in vqa.state_dict().items())


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_demo_vqa_vit_lr_scale(tmp_path, monkeypatch, scale):
    """`vqa_vit_lr_scale` 0 leaves the ViT exactly as it was (and out of the optimiser) while the rest trains; a
    positive scale gives the ViT that multiple of the scheduled learning rate at every step."""
    import openblip.demo.train as T
    from openblip.demo.data import load_train, prepare_world

    cfg = preset_config("quick", out=tmp_path, vqa_steps=2, vqa_vit_lr_scale=scale).replace(**TINY)
    info, _ = prepare_world(tmp_path / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)
    vqa = create_model(cfg.blip_config("vqa"))
    before = {k: v.clone() for k, v in vqa.state_dict().items()}
    seen = []
    set_lr = T._set_lr

    def spy(opt, lr):
        set_lr(opt, lr)
        seen.append((lr, [(g["lr"], len(g["params"])) for g in opt.param_groups]))

    monkeypatch.setattr(T, "_set_lr", spy)
    T.finetune_vqa(vqa, cfg, load_train(info), lambda m: None)
    after = vqa.state_dict()
    vit = [k for k in after if k.startswith("visual_encoder.")]
    rest = [k for k in after if not k.startswith("visual_encoder.")]
    assert vit and any(not torch.equal(before[k], after[k]) for k in rest)
    n_vit = len(list(vqa.visual_encoder.parameters()))
    assert len(seen) == 2
    for lr, groups in seen:
        if scale == 0.0:
            assert len(groups) == 1 and all(torch.equal(before[k], after[k]) for k in vit)
        else:
            assert groups[0][0] == lr and groups[1] == (lr * scale, n_vit)
    if scale:
        assert any(not torch.equal(before[k], after[k]) for k in vit)
    assert all(p.requires_grad for p in vqa.visual_encoder.parameters())  # frozen for the fine-tuning only


def test_demo_vqa_frozen_vit_keeps_parameters_frozen_before(tmp_path):
    """Freezing the ViT for VQA fine-tuning unfreezes afterwards only what it froze, not a parameter the caller had
    frozen before."""
    from openblip.demo.data import load_train, prepare_world
    from openblip.demo.train import finetune_vqa

    cfg = preset_config("quick", out=tmp_path, vqa_steps=1, vqa_vit_lr_scale=0.0).replace(**TINY)
    info, _ = prepare_world(tmp_path / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)
    vqa = create_model(cfg.blip_config("vqa"))
    first, *rest = vqa.visual_encoder.parameters()
    first.requires_grad_(False)
    finetune_vqa(vqa, cfg, load_train(info), lambda m: None)
    assert not first.requires_grad and all(p.requires_grad for p in rest)


def test_demo_vqa_vit_lr_scale_must_not_be_negative(tmp_path):
    from openblip.demo.train import finetune_vqa

    cfg = preset_config("quick", out=tmp_path, vqa_steps=1, vqa_vit_lr_scale=-0.5).replace(**TINY)
    with pytest.raises(ValueError, match="vqa_vit_lr_scale"):
        finetune_vqa(create_model(cfg.blip_config("vqa")), cfg, None, lambda m: None)


def test_flip_batch_keeps_texts_true():
    pixels = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    texts = ["a red circle left of a blue square", ["what is right of the red circle?", "square"]]
    flipped_any = False
    for seed in range(8):
        px, out = flip_batch(pixels, texts, torch.Generator().manual_seed(seed))
        for i in range(2):
            if torch.equal(px[i], pixels[i]):
                assert out[i] == texts[i]
            else:
                flipped_any = True
                assert torch.equal(px[i], pixels[i].flip(-1))
                assert out[i] == (
                    "a red circle right of a blue square" if i == 0 else ["what is left of the red circle?", "square"]
                )
    assert flipped_any


def test_lr_schedule():
    assert lr_at(0, 100, 1e-3, warmup=10) == pytest.approx(1e-4)
    assert lr_at(10, 100, 1e-3, warmup=10) == pytest.approx(1e-3)
    assert lr_at(100, 100, 1e-3, warmup=10) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_demo_quick_meets_bars(tmp_path):
    """`openblip demo --quick` (300 pre-training + 250 VQA steps, ~4 min on 2 cores), seed 0, held-out scenes.

    Asserted: the issue's --quick bars this BLIP meets on seed 0 (and seed 2; README "The demo"): caption token
    accuracy >= 0.65, ITC R@1 >= 0.15 and R@5 >= 0.50 in both directions over 500 distinct captions; and colour
    questions answered better than the question-only prior (the VQA model reads the image). The run is
    deterministic, so this guards against regressions; it does not show robustness: seed 1 misses the ITC bars
    (R@1 0.10 / 0.08, R@5 0.43 / 0.41). NOT asserted because NOT met: caption exact match >= 0.05 (0.02-0.03 on
    seeds 0-2: shapes are still confused after 300 steps), VQA colour >= 0.40 (0.58 / 0.17 / 0.38) and overall VQA
    >= 0.50 (0.44 / 0.26 / 0.41: count, shape and relation questions stay at or below their prior).
    """
    cfg = preset_config("quick", out=tmp_path, coco_metrics=False, gallery=False)
    m = openblip.demo.run_demo(cfg, log=lambda s: None)
    assert m["train_steps"] == 550
    assert m["caption_token_acc"] >= 0.65, m
    for key in ("itc_i2t_r1", "itc_t2i_r1"):
        assert m[key] >= 0.15, (key, m[key])
    for key in ("itc_i2t_r5", "itc_t2i_r5"):
        assert m[key] >= 0.50, (key, m[key])
    assert m["vqa_color_acc"] > m["baselines"]["vqa_color_acc"], m


# --- the demo's world folder: reuse only a complete, loadable world -----------------------------------------------

SMALL_WORLD = {"n_train": 12, "n_test": 6, "image_size": 64}


def _prepare(root, seed=0, log=None):
    from openblip.demo.data import prepare_world

    return prepare_world(root, SMALL_WORLD["n_train"], SMALL_WORLD["n_test"], SMALL_WORLD["image_size"], seed, log)


def _world_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_interrupted_regeneration_is_not_reused(tmp_path, monkeypatch):
    """Regenerating seed 1 into a seed-0 world, interrupted after 10 images, then asking for seed 0 again must
    regenerate (the images are seed 1's by then), and say why."""
    from openblip.data import synthetic

    root = tmp_path / "world"
    _, reused = _prepare(root, seed=0)
    assert not reused
    seed0 = _world_bytes(root)
    assert _prepare(root, seed=0)[1]  # a complete world with the same settings is reused

    real, rendered = synthetic.render_scene, []

    def render(*args, **kwargs):
        if len(rendered) == 10:
            raise KeyboardInterrupt
        rendered.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_scene", render)
    with pytest.raises(KeyboardInterrupt):
        _prepare(root, seed=1)
    monkeypatch.undo()
    assert _world_bytes(root)["images/train/scene_000001.png"] != seed0["images/train/scene_000001.png"]

    lines = []
    info, reused = _prepare(root, seed=0, log=lines.append)
    assert not reused and info.seed == 0
    assert _world_bytes(root) == seed0  # every file is seed 0's again
    assert len(lines) == 1 and "regenerating" in lines[0] and "world.json" in lines[0], lines


def test_prepare_world_says_why_it_does_not_reuse(tmp_path):
    root = tmp_path / "world"
    _prepare(root, seed=0)
    lines = []
    info, reused = _prepare(root, seed=2, log=lines.append)
    assert not reused and info.seed == 2
    assert len(lines) == 1 and "seed 0" in lines[0] and "seed 2" in lines[0], lines
    (root / "world.json").write_text("{")
    lines.clear()
    assert not _prepare(root, seed=2, log=lines.append)[1]
    assert len(lines) == 1 and "world.json is unreadable" in lines[0], lines


@pytest.mark.parametrize(
    "damage",
    ["missing image", "truncated image", "corrupt annotation", "missing annotation", "wrong keys"],
)
def test_damaged_reused_world_is_regenerated(tmp_path, damage):
    from openblip.demo.data import prepare_data

    root = tmp_path / "world"
    args = (root, SMALL_WORLD["n_train"], SMALL_WORLD["n_test"], SMALL_WORLD["image_size"], 0, 5)
    _, reused, train, test = prepare_data(*args)
    assert not reused
    good = _world_bytes(root)
    image = root / test.paths[3]
    if damage == "missing image":
        image.unlink()
        name = image.name
    elif damage == "truncated image":
        image.write_bytes(image.read_bytes()[:60])
        name = image.name
    elif damage == "corrupt annotation":
        (root / "annotations" / "vqa_train.json").write_text('[{"question_id": 1,')
        name = "vqa_train.json"
    elif damage == "missing annotation":
        (root / "annotations" / "scenes_test.json").unlink()
        name = "scenes_test.json"
    else:
        (root / "annotations" / "caption_test.json").write_text('[{"img": "x.png"}]')
        name = "caption_test.json"

    lines = []
    info, reused, train2, test2 = prepare_data(*args, log=lines.append)
    assert not reused and info.seed == 0
    assert len(lines) == 1 and "regenerating the world" in lines[0] and name in lines[0], lines
    assert "\n" not in lines[0]
    assert _world_bytes(root) == good
    assert torch.equal(train2.pixels, train.pixels) and torch.equal(test2.pixels, test.pixels)
    assert test2.vqa_question == test.vqa_question and train2.captions == train.captions


def test_world_that_cannot_be_loaded_after_generation_is_an_error(tmp_path, monkeypatch):
    """A freshly generated world that does not load is not regenerated in a loop: WorldDataError names the file."""
    from openblip.data.synthetic import generate_world
    from openblip.demo import data

    def broken(root, *args, **kwargs):
        info = generate_world(root, *args, **kwargs)
        (root / "images" / "train" / "scene_000002.png").unlink()
        return info

    monkeypatch.setattr(data, "generate_world", broken)
    with pytest.raises(data.WorldDataError, match=r"scene_000002\.png"):
        data.prepare_data(tmp_path / "world", 12, 6, 64, 0, 5)


def test_demo_run_regenerates_a_damaged_world(tmp_path):
    """run_demo (what `openblip demo` calls) on an out folder whose world lost an image and has a corrupt
    annotation file: it logs why and regenerates instead of failing with a traceback."""
    cfg = preset_config("quick", out=tmp_path, steps=1, vqa_steps=0, coco_metrics=False, gallery=False).replace(**TINY)
    _, reused = _prepare_for(cfg)
    assert not reused
    (tmp_path / "world" / "images" / "test" / "scene_000050.png").unlink()
    (tmp_path / "world" / "annotations" / "caption_train.json").write_text("not json")
    lines = []
    m = openblip.demo.run_demo(cfg, log=lines.append)
    assert m["pretrain_steps"] == 1 and m["n_test_scenes"] == TINY["n_test"]
    regen = [line for line in lines if "regenerating the world" in line]
    assert len(regen) == 1 and "caption_train.json" in regen[0], lines
    assert any(line.startswith("world generated") for line in lines), lines
    assert (tmp_path / "world" / "images" / "test" / "scene_000050.png").is_file()


def _prepare_for(cfg):
    from openblip.demo.data import prepare_world

    return prepare_world(cfg.out / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)


# --- command-line validation --------------------------------------------------------------------------------------


@pytest.fixture
def stub_run(monkeypatch):
    """`openblip demo` with run_demo replaced by a recorder (no training): the CLI's own checks only."""
    calls = []

    def fake_run_demo(cfg, **kwargs):
        calls.append(cfg)
        return {k: 0.0 for k in METRIC_KEYS}

    monkeypatch.setattr(openblip.demo, "run_demo", fake_run_demo)
    return calls


def _demo(*args):
    return CliRunner().invoke(main, ["demo", "--json", *args])


def _one_error_line(res, *words):
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_demo_cli_presets(tmp_path, stub_run):
    for flags, preset in (([], "default"), (["--quick"], "quick"), (["--long"], "long")):
        res = _demo("--out", str(tmp_path / "o"), *flags)
        assert res.exit_code == 0, res.output
        assert stub_run[-1].preset == preset
        assert stub_run[-1].vit_steps == (600 if preset == "default" else 0)
    assert _demo("--out", str(tmp_path / "o"), "--vit-steps", "0").exit_code == 0 and stub_run[-1].vit_steps == 0


def test_demo_cli_quick_and_long_conflict(tmp_path, stub_run):
    for flags in (["--quick", "--long"], ["--long", "--quick"]):
        res = _demo("--out", str(tmp_path / "o"), *flags)
        _one_error_line(res, "--quick", "--long")
    assert stub_run == []


def test_demo_cli_negative_seed_is_a_usage_error(tmp_path, stub_run):
    res = _demo("--out", str(tmp_path / "o"), "--seed", "-1")
    assert res.exit_code == 2 and "--seed" in res.output and "Traceback" not in res.output, res.output
    assert isinstance(res.exception, SystemExit)
    assert stub_run == []
    assert _demo("--out", str(tmp_path / "o"), "--seed", "0").exit_code == 0 and stub_run[-1].seed == 0


def test_demo_cli_unusable_out_is_a_usage_error(tmp_path, stub_run):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_error_line(_demo("--out", str(afile)), "--out", str(afile), "not a directory")
    _one_error_line(_demo("--out", str(afile / "sub")), "--out", str(afile / "sub"))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "world").write_text("x")
    _one_error_line(_demo("--out", str(tmp_path / "o")), "--out", "world")
    assert stub_run == []
    assert afile.read_text() == "x"


def test_demo_cli_world_error_is_one_line(tmp_path, monkeypatch):
    from openblip.demo.data import WorldDataError

    def fail_run(cfg, **kwargs):
        raise WorldDataError("cannot read /x/annotations/vqa_train.json: missing key 'image'")

    monkeypatch.setattr(openblip.demo, "run_demo", fail_run)
    res = _demo("--out", str(tmp_path / "o"))
    assert res.exit_code == 1, res.output
    assert res.output.strip() == "error: cannot read /x/annotations/vqa_train.json: missing key 'image'"


@pytest.mark.parametrize("n, batch", [(50, 16), (5000 % 64 + 64, 64), (7, 7), (7, 3)])
def test_epoch_sampler_batches_never_repeat_and_epochs_stay_permutations(n, batch):
    """A batch never holds a scene twice, even when it spans two epochs (its in-batch negatives are other scenes),
    and the served stream, cut into runs of ``n``, is one permutation of ``0..n-1`` per epoch."""
    from openblip.demo.data import EpochSampler

    sampler = EpochSampler(n, torch.Generator().manual_seed(0))
    stream: list[int] = []
    spanning = 0
    for _ in range(200):
        before = len(stream) // n
        idx = sampler.take(batch)
        assert len(idx) == batch and len(set(idx)) == batch, idx
        stream.extend(idx)
        spanning += (len(stream) - 1) // n > before
    for e in range(len(stream) // n):
        assert sorted(stream[e * n : (e + 1) * n]) == list(range(n)), e
    assert sampler.epoch == -(-len(stream) // n)  # one fresh permutation per started epoch
    if n % batch:
        assert spanning > 0  # the case this guards was exercised
    again = EpochSampler(n, torch.Generator().manual_seed(0))
    assert [i for _ in range(200) for i in again.take(batch)] == stream  # seeded, deterministic


def test_epoch_sampler_keeps_randperm_order_on_batch_boundaries():
    """When an epoch starts on a batch boundary nothing is moved: the order is ``torch.randperm``'s, served from its
    end, as before the fix (so the demo's data order only changes where a batch spans two epochs)."""
    from openblip.demo.data import EpochSampler

    g = torch.Generator().manual_seed(3)
    expected = torch.randperm(12, generator=g).tolist()[::-1] + torch.randperm(12, generator=g).tolist()[::-1]
    sampler = EpochSampler(12, torch.Generator().manual_seed(3))
    assert [i for _ in range(6) for i in sampler.take(4)] == expected


def _gallery_fixture(tmp_path, n=12, reranked=(0, 1, 2)):
    """A fake test set and retrieval samples: scene ``n-1`` is the only 2-object scene, so it is the gallery's query
    target; the images in ``reranked`` got ITM scores, every other entry of the query's row is the -100 filler."""
    from types import SimpleNamespace

    from PIL import Image

    (tmp_path / "world").mkdir()
    paths = [f"s{i}.png" for i in range(n)]
    for p in paths:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "world" / p)
    obj = {"shape": "circle", "color": "red", "size": "large"}
    test = SimpleNamespace(
        paths=paths,
        references=[[f"caption {i}", f"paraphrase {i}"] for i in range(n)],
        scenes=[{"objects": [obj] * (2 if i == n - 1 else 1)} for i in range(n)],
        vqa_image=[],
        vqa_question=[],
        vqa_answers=[],
    )
    q = n - 1
    cosine = torch.linspace(0.1, 0.2, n * n).view(n, n)  # [images, texts]
    cosine[:, q] = torch.tensor([0.9, 0.8, 0.7] + [0.1 + 0.01 * i for i in range(n - 3)])
    cosine[q, q] = 0.6  # the target: the best ITC cosine outside the re-ranked three
    t2i = torch.full((n, n), -100.0)
    for j, s in zip(reranked, (5.0, 4.0, 3.0)):
        t2i[q, j] = s
    samples = {
        "generated": [f"caption {i}" for i in range(n)],
        "vqa_predictions": [],
        "retrieval": {
            "texts": [f"caption {i}" for i in range(n)],
            "t2i": t2i,
            "cosine": cosine,
            "subset": list(range(n)),
        },
    }
    result = {"config": {"seed": 0}, "machine": {"threads": 1}, "baselines": {}}
    return test, result, samples


def test_gallery_ranks_a_target_outside_the_itm_top_k_by_itc(tmp_path):
    """The described scene is outside the ITM-re-ranked top 3 (its score, like every other's outside, is the -100
    filler): its rank comes from the ITC cosine (#4, right after the re-ranked three), not from how a sort happened
    to order 9 tied -100s, and the gallery says so."""
    from openblip.demo.report import gallery_content, render_html, render_png

    test, result, samples = _gallery_fixture(tmp_path)
    r = gallery_content(test, result, samples)["retrieval"]
    assert r["target"] == 11 and r["pool"] == 12
    assert r["target_rank"] == 4 and not r["target_reranked"] and r["reranked"] == 3
    assert [h["index"] for h in r["top"]] == [0, 1, 2, 11, 10]  # re-ranked by ITM, then by ITC cosine
    assert [h["reranked"] for h in r["top"]] == [True, True, True, False, False]
    assert r["top"][3]["ok"] and r["top"][3]["score"] == pytest.approx(0.6)
    view = {**result, "_paths": test.paths}
    content = gallery_content(test, result, samples)
    html = render_html(tmp_path / "world", content, view)
    assert "came #4 of 12 by ITC similarity, outside the top 3 re-ranked by ITM" in html
    assert "#4  ITC 0.60  (the described scene)" in html
    render_png(tmp_path / "world", content, view)  # draws without error


def test_gallery_rank_inside_the_itm_top_k_is_the_reranked_rank(tmp_path):
    from openblip.demo.report import gallery_content, render_html, t2i_order

    test, result, samples = _gallery_fixture(tmp_path, reranked=(0, 11, 2))
    r = gallery_content(test, result, samples)["retrieval"]
    assert r["target_rank"] == 2 and r["target_reranked"]
    html = render_html(tmp_path / "world", gallery_content(test, result, samples), {**result, "_paths": test.paths})
    assert "the scene it describes came #2 of 12)" in html
    # ties (in the score and in the cosine) break on the index: deterministic
    order, reranked = t2i_order(torch.tensor([-100.0, 2.0, -100.0, 2.0]), torch.tensor([0.5, 0.0, 0.5, 0.9]))
    assert order == [1, 3, 0, 2] and reranked == {1, 3}


def test_lm_all_captions_trains_the_lm_on_both_references_of_each_scene(tmp_path, monkeypatch):
    """`lm_all_captions`: the LM loss is the mean of the LM losses of the caption ITC/ITM see and of the scene's
    other reference, both flipped with the image; ITC and ITM are unchanged."""
    from openblip.data.augment import swap_left_right
    from openblip.demo.data import load_train, prepare_world
    from openblip.demo.train import DemoPretrainObjective, build_pretrain_model, pretrain
    from openblip.tokenizer import get_tokenizer

    cfg = preset_config("quick", out=tmp_path, steps=2, text_dropout=0.0, lm_all_captions=True).replace(**TINY)
    tok = get_tokenizer()

    # the loss: one objective call with extra_lm == the separately computed LM losses
    model = build_pretrain_model(cfg)
    obj = DemoPretrainObjective(model, queue_size=32, momentum=0.0, alpha=0.0).train()
    obj.use_queue, obj.use_itm = False, True
    pixels = torch.randn(8, 3, 64, 64)
    a = tok(["a small red circle"] * 4 + ["a large blue square left of a small green cross"] * 4, padding="longest")
    b = tok(
        ["there is a small red circle"] * 4 + ["a small green cross right of a large blue square"] * 4,
        padding="longest",
    )
    out = obj(pixels, a["input_ids"], a["attention_mask"], generator=torch.Generator().manual_seed(0))
    both = obj(
        pixels,
        a["input_ids"],
        a["attention_mask"],
        generator=torch.Generator().manual_seed(0),
        extra_lm=(b["input_ids"], b["attention_mask"]),
    )
    embeds = model.encode_image(pixels)
    lm_b = obj.lm_loss(embeds, b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(both["loss_lm"], (out["loss_lm"] + lm_b) / 2)
    torch.testing.assert_close(both["loss_ita"], out["loss_ita"])
    torch.testing.assert_close(both["loss"], both["loss_ita"] + both["loss_itm"] + both["loss_lm"])

    # the loop: each extra caption is the same scene's other reference, flipped (left/right swapped) with the image
    info, _ = prepare_world(tmp_path / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)
    data = load_train(info)
    refs = {frozenset(c) for c in data.captions} | {frozenset(swap_left_right(c)) for c in data.captions}
    seen = []
    real_forward = DemoPretrainObjective.forward

    def spy(self, pixel_values, input_ids, attention_mask=None, alpha=None, generator=None, vqa=None, extra_lm=None):
        first = tok.batch_decode(input_ids, skip_special_tokens=True)
        extra = tok.batch_decode(extra_lm[0], skip_special_tokens=True)
        seen.extend(frozenset(p) for p in zip(first, extra))
        return real_forward(self, pixel_values, input_ids, attention_mask, alpha, generator, vqa, extra_lm)

    monkeypatch.setattr(DemoPretrainObjective, "forward", spy)
    pretrain(build_pretrain_model(cfg), cfg, data, lambda m: None)
    assert len(seen) == 2 * cfg.batch_size and all(len(p) == 2 and p in refs for p in seen)


def test_object_pooling_covers_each_object_and_mirrors_with_the_flip():
    from openblip.demo.train import object_pooling

    objects = [(0.25, 0.5, 0.09, 2, 3, 0), (0.7, 0.3, 0.15, 4, 1, 1)]
    weights, labels = object_pooling(objects, grid=8, flipped=False)
    assert weights.shape == (2, 64) and labels.tolist() == [[2, 3, 0], [4, 1, 1]]
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    grid = weights.view(2, 8, 8)
    assert grid[0, 4, 2] > 0 and grid[1, 2, 5] > 0  # the patches under the centres (row = y, column = x)
    assert grid[0, :, 5:].sum() == 0 and grid[1, :, :3].sum() == 0  # nothing from the other object's side
    mirrored, _ = object_pooling(objects, grid=8, flipped=True)
    torch.testing.assert_close(mirrored.view(2, 8, 8), grid.flip(-1))
    tiny, _ = object_pooling([(0.52, 0.47, 0.01, 0, 0, 0)], grid=8, flipped=False)  # no patch centre in its box
    assert tiny.sum() == 1 and tiny.view(8, 8)[3, 4] == 1  # the patch under its centre
    # a centre exactly on a patch corner with no patch centre in its core: the 4 patches around it, mirrored with
    # the image (taking the one "under" it by rounding down picked column 2 here and column 6, not 5, mirrored)
    corner, _ = object_pooling([(0.25, 0.5, 0.01, 0, 0, 0)], grid=8, flipped=False, core=0.75)
    assert (corner.view(8, 8) > 0).nonzero().tolist() == [[3, 1], [3, 2], [4, 1], [4, 2]] and corner.max() == 0.25
    corner_flipped, _ = object_pooling([(0.25, 0.5, 0.01, 0, 0, 0)], grid=8, flipped=True, core=0.75)
    torch.testing.assert_close(corner_flipped.view(8, 8), corner.view(8, 8).flip(-1))
    # a large object: only the patches whose centres lie within 0.75 of its radius from its centre, not the corners
    # of its bounding box (background for a circle); centres 0.0625 + 0.125 k, object at (0.5, 0.5), radius 0.4
    big, _ = object_pooling([(0.5, 0.5, 0.4, 0, 0, 0)], grid=8, flipped=False, core=0.75)
    picked = (big.view(8, 8) > 0).nonzero().tolist()
    centres = [((r + 0.5) / 8, (c + 0.5) / 8) for r, c in picked]
    assert all((y - 0.5) ** 2 + (x - 0.5) ** 2 <= 0.3**2 for y, x in centres)
    assert sorted(map(tuple, picked)) == [(r, c) for r in range(2, 6) for c in range(2, 6)]  # [2, 2]: 0.265 away
    assert torch.allclose(big[big > 0], torch.full((16,), 1 / 16))  # [1, 3] (0.32 away) and the box corners are out
    box, _ = object_pooling([(0.5, 0.5, 0.4, 0, 0, 0)], grid=8, flipped=False)  # the default: its bounding box
    assert ((box.view(8, 8) > 0).nonzero().tolist()) == [[r, c] for r in range(1, 7) for c in range(1, 7)]
    for core in (None, 0.75):  # with either rule, a small object between patch centres pools the nearest ones
        small, _ = object_pooling([(0.52, 0.47, 0.05, 0, 0, 0)], grid=8, flipped=False, core=core)
        assert small.view(8, 8)[3, 4] == 1


def test_supervised_vit_stage_uses_each_scenes_own_objects(tmp_path):
    from openblip.data.synthetic import COLORS, SHAPES
    from openblip.demo.data import load_train, prepare_world
    from openblip.demo.train import build_pretrain_model, pretrain_vit

    cfg = preset_config("quick", out=tmp_path, vit_steps=3).replace(**TINY)
    info, _ = prepare_world(tmp_path / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)
    data = load_train(info)
    assert len(data.objects) == len(data.captions)
    for objs, caps in zip(data.objects, data.captions):  # the objects are the ones the captions name
        words = caps[0].split()
        assert sorted(SHAPES[o[3]] for o in objs) == sorted(w for w in words if w in SHAPES)
        assert sorted(list(COLORS)[o[4]] for o in objs) == sorted(w for w in words if w in COLORS)

    model = build_pretrain_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    stats = pretrain_vit(model, cfg, data, lines.append)
    assert stats["steps"] == 3 and len(lines) == 3 and stats["final_loss_vit"] > 0
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("visual_encoder.") for k in changed)  # only the ViT (heads discarded)
    assert pretrain_vit(model, cfg.replace(vit_steps=0), data, lines.append) == {"steps": 0, "seconds": 0.0}


def test_supervised_vit_stage_pools_the_box_or_the_core_as_configured(tmp_path, monkeypatch):
    import openblip.demo.train as train
    from openblip.demo.data import load_train, prepare_world

    cfg = preset_config("quick", out=tmp_path, vit_steps=1).replace(**TINY)
    info, _ = prepare_world(tmp_path / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed)
    data = load_train(info)
    seen = []
    real = train.object_pooling
    monkeypatch.setattr(train, "object_pooling", lambda *a: seen.append(a[3]) or real(*a))
    for pool, core in (("box", None), ("core", 0.75)):
        seen.clear()
        train.pretrain_vit(train.build_pretrain_model(cfg), cfg.replace(vit_pool=pool), data, lambda m: None)
        assert seen and set(seen) == {core}, pool
    assert DemoConfig().vit_pool == "box" and preset_config("quick").vit_pool == "box"
    with pytest.raises(ValueError, match="vit_pool"):
        train.pretrain_vit(train.build_pretrain_model(cfg), cfg.replace(vit_pool="disc"), data, lambda m: None)
