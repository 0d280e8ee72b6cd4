"""Every CLI command through click's test runner: schema, exit codes, error rows, clean stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from openblip.cli import main
from tests.helpers import random_images, tiny_model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for task in ("caption", "retrieval", "vqa"):
        tiny_model(task).save_pretrained(root / task)
    return root


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i, arr in enumerate(random_images(3)):
        Image.fromarray(arr).save(d / ("sub" if i == 2 else ".") / f"img{i}.png")
    (d / "broken.jpg").write_bytes(b"not an image at all")
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return d


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_help_for_every_command():
    commands = ["caption", "vqa", "match", "tag", "rank", "models", "download", "convert", "smoke", "eval", "world"]
    commands += [f"eval {sub}" for sub in ("caption", "retrieval", "vqa", "nlvr")]
    commands += ["world generate", "world info"]
    for cmd in commands:
        res = run(*cmd.split(), "--help")
        assert res.exit_code == 0, cmd
        assert "Usage" in res.output


def test_usage_error_exit_code():
    assert CliRunner().invoke(main, ["caption"]).exit_code == 2
    assert CliRunner().invoke(main, ["caption", "x.png", "--format", "yaml"]).exit_code == 2


def test_match(models_dir, images):
    res = run("match", images / "img0.png", "a dog", "a cat", "--model", models_dir / "retrieval")
    assert res.exit_code == 0, res.output
    rows = jsonl(res.stdout)
    assert {r["text"] for r in rows} == {"a dog", "a cat"}
    assert set(rows[0]) == {"image", "text", "itm_prob", "itm_logit", "itc_cosine"}
    assert rows[0]["itm_prob"] >= rows[1]["itm_prob"]


def test_match_unreadable_image_is_one_clear_error(models_dir, images):
    res = CliRunner().invoke(
        main, ["match", str(images / "broken.jpg"), "a dog", "--model", str(models_dir / "retrieval")]
    )
    assert res.exit_code == 1
    assert "broken.jpg" in res.stderr and "Traceback" not in res.output


def test_tag_with_error_row_and_partial_exit(models_dir, images, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("dog\ncat\nbird\n")
    res = run("tag", images, "--labels", labels, "--top-k", 2, "--model", models_dir / "retrieval")
    assert res.exit_code == 3
    rows = jsonl(res.stdout)
    assert len(rows) == 4
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.jpg")
    good = [r for r in rows if not r["error"]]
    assert all(len(r["tags"]) == 2 for r in good)
    inline = run("tag", images / "img0.png", "--labels", "dog,cat", "--model", models_dir / "retrieval")
    assert inline.exit_code == 0 and {t["label"] for t in jsonl(inline.stdout)[0]["tags"]} == {"dog", "cat"}


def test_rank(models_dir, images, tmp_path):
    texts = tmp_path / "q.txt"
    texts.write_text("a dog\na cat\n\nred square\n")
    res = run(
        "rank",
        "--images",
        images,
        "--texts",
        texts,
        "--k",
        2,
        "--model",
        models_dir / "retrieval",
        "--direction",
        "both",
    )
    assert res.exit_code == 3  # the broken image is reported, the rest ranked
    rows = jsonl(res.stdout)
    queries = [r for r in rows if "query" in r]
    assert [q["query"] for q in queries] == ["a dog", "a cat", "red square"]
    assert all(len(q["results"]) == 2 for q in queries)
    assert len([r for r in rows if "image" in r]) == 3
    assert any(r.get("error") for r in rows)


def test_vqa_rank_method(models_dir, images, tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["yes", "no", "2", "red"]))
    res = run(
        "vqa",
        images / "img0.png",
        "is there a dog?",
        "how many?",
        "--method",
        "rank",
        "--answers",
        answers,
        "--model",
        models_dir / "vqa",
    )
    assert res.exit_code == 0, res.output
    rows = jsonl(res.stdout)
    assert [r["question"] for r in rows] == ["is there a dog?", "how many?"]
    assert all(r["answer"] in {"yes", "no", "2", "red"} for r in rows)
    assert (
        CliRunner()
        .invoke(main, ["vqa", str(images / "img0.png"), "q?", "--method", "rank", "--model", str(models_dir / "vqa")])
        .exit_code
        == 2
    )


def test_models_lists_registry_offline():
    res = run("models", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert "blip-tiny" in data["architectures"]
    names = {c["name"] for c in data["checkpoints"]}
    assert "blip-base-caption-coco" in names and "Salesforce/blip-vqa-base" in names
    assert all(c["cached"] is False for c in data["checkpoints"])
    assert run("models", "--task", "vqa").exit_code == 0


def test_download_offline_gives_clear_error():
    res = CliRunner().invoke(main, ["download", "blip-base-caption-coco"])
    assert res.exit_code == 1
    assert "model_base_caption_capfilt_large.pth" in res.stderr
    res = CliRunner().invoke(main, ["download", "no-such-model"])
    assert res.exit_code == 1


def test_unknown_model_is_one_line_error(images):
    res = CliRunner().invoke(main, ["match", str(images / "img0.png"), "a", "--model", "no-such-model-xyz"])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: cannot load model") and "Traceback" not in res.output


def test_convert_every_direction(models_dir, tmp_path):
    src = models_dir / "retrieval"
    for to, dst in (("official", tmp_path / "m.pth"), ("hf", tmp_path / "hf"), ("openblip", tmp_path / "ob")):
        res = run("convert", src, dst, "--to", to)
        assert res.exit_code == 0, res.output
        assert Path(res.stdout.strip()).exists()
    res = CliRunner().invoke(
        main, ["convert", str(tmp_path / "m.pth"), str(tmp_path / "x"), "--to", "hf", "--task", "nlvr"]
    )
    assert res.exit_code == 1 and "error:" in res.stderr


def test_convert_says_what_it_leaves_out_and_converts_a_part_with_no_strict(tmp_path):
    import torch

    from openblip.api import load
    from openblip.checkpoint import save_official
    from openblip.models.blip import BlipCaption
    from openblip.train.objectives import PretrainObjective

    # an official pre-training file: the model + momentum encoders + queues
    model = tiny_model("pretrain")
    path = save_official(model, tmp_path / "pre.pth")
    ckpt = torch.load(path, weights_only=True)
    training = PretrainObjective(model, queue_size=8).state_dict()
    ckpt["model"].update({k: v for k, v in training.items() if not k.startswith("model.")})
    torch.save(ckpt, path)
    res = run("convert", path, tmp_path / "ob", "--to", "openblip")
    assert res.exit_code == 0 and "left out" in res.stderr and "momentum encoders" in res.stderr
    strict = run("convert", path, tmp_path / "cap", "--to", "hf", "--task", "caption")
    assert strict.exit_code == 1 and "unexpected keys" in strict.stderr
    loose = run("convert", path, tmp_path / "cap", "--to", "hf", "--task", "caption", "--no-strict")
    assert loose.exit_code == 0 and "text_encoder" in loose.stderr and "itm_head" in loose.stderr
    assert isinstance(load(tmp_path / "cap"), BlipCaption)


def test_caption_jsonl_error_rows_and_partial_exit(models_dir, images):
    res = run("caption", images, "--model", models_dir / "caption", "--max-length", 10, "--batch-size", 2)
    assert res.exit_code == 3
    rows = jsonl(res.stdout)  # stdout holds only result rows (no progress bar output)
    assert len(rows) == 4
    assert all(set(r) == {"path", "caption", "error"} for r in rows)
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.jpg") and bad[0]["caption"] is None
    assert all(isinstance(r["caption"], str) for r in rows if not r["error"])
    assert any(r["path"].endswith("sub/img2.png") for r in rows)  # folders are walked recursively


def test_caption_formats_and_exit_codes(models_dir, images):
    ok = run("caption", images / "img0.png", images / "img1.png", "--model", models_dir / "caption", "--format", "csv")
    assert ok.exit_code == 0
    lines = ok.stdout.splitlines()
    assert lines[0] == "path,caption,error" and len(lines) == 3
    text = run("caption", images / "img0.png", "--model", models_dir / "caption", "--format", "text")
    assert text.exit_code == 0 and text.stdout.startswith(str(images / "img0.png") + "\t")
    allbad = CliRunner().invoke(main, ["caption", str(images / "broken.jpg"), "--model", str(models_dir / "caption")])
    assert allbad.exit_code == 1 and len(jsonl(allbad.stdout)) == 1
    multi = run(
        "caption", images / "img0.png", "--model", models_dir / "caption", "--num-captions", 2, "--sample", "--seed", 1
    )
    row = jsonl(multi.stdout)[0]
    assert multi.exit_code == 0 and len(row["captions"]) == 2 and row["caption"] == row["captions"][0]


def test_vqa_generate_cli(models_dir, images):
    res = run("vqa", images / "img0.png", "what is this?", "--model", models_dir / "vqa")
    assert res.exit_code == 0
    assert set(jsonl(res.stdout)[0]) == {"image", "question", "answer"}


def test_smoke_command(tmp_path):
    res = run("smoke", "--out", tmp_path / "m")
    assert res.exit_code == 0
    assert isinstance(json.loads(res.stdout)["caption"], str)
    assert (tmp_path / "m" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------------------------
# usage errors are caught before the model loads: a model that cannot load proves the order (that would exit 1)

NO_MODEL = "no-such-model-xyz"


def usage_error(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot load model" not in lines[0]
    return lines[0]


def test_caption_usage_errors_before_the_model_loads(models_dir, images):
    img = images / "img0.png"
    assert "num_captions (4) cannot exceed num_beams (3)" in usage_error(
        "caption", img, "--num-captions", 4, "--num-beams", 3, "--model", NO_MODEL
    )
    assert "must exceed the prompt length (4" in usage_error("caption", img, "--max-length", 4, "--model", NO_MODEL)
    assert "repetition_penalty must be > 0" in usage_error(
        "caption", img, "--repetition-penalty", 0, "--model", NO_MODEL
    )
    # the position limit is the model's: checked once it is loaded, still before any row
    assert "512 positions" in usage_error("caption", img, "--max-length", 600, "--model", models_dir / "caption")


def test_caption_rows_keep_the_input_order_within_a_batch(models_dir, images):
    order = [images / "img0.png", images / "broken.jpg", images / "img1.png"]
    res = run("caption", *order, "--model", models_dir / "caption", "--max-length", 8, "--batch-size", 3)
    assert res.exit_code == 3
    rows = jsonl(res.stdout)
    assert [r["path"] for r in rows] == [str(p) for p in order]
    assert [r["error"] is None for r in rows] == [True, False, True]


def test_caption_with_a_pretrain_checkpoint(tmp_path, images):
    tiny_model("pretrain").save_pretrained(tmp_path / "pretrain")
    res = run("caption", images / "img0.png", "--model", tmp_path / "pretrain", "--max-length", 8)
    assert res.exit_code == 0 and isinstance(jsonl(res.stdout)[0]["caption"], str)


def test_vqa_answer_list_errors_are_usage_errors(images, tmp_path):
    bad = {
        "bad.json": '["yes", "no"',
        "empty.json": "[]",
        "dict.json": '{"answers": ["yes"]}',
        "str.json": '"yes"',
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    folder = tmp_path / "folder"
    folder.mkdir()
    for answers in [*(tmp_path / name for name in bad), folder]:
        line = usage_error(
            "vqa", images / "img0.png", "q?", "--method", "rank", "--answers", answers, "--model", NO_MODEL
        )
        assert str(answers) in line


def test_tag_label_and_template_errors_are_usage_errors(models_dir, images, tmp_path):
    img = images / "img0.png"
    assert "invalid template 'photo of {label}'" in usage_error(
        "tag", img, "--labels", "dog,cat", "--template", "photo of {label}", "--model", NO_MODEL
    )
    (tmp_path / "five.json").write_text("5")
    (tmp_path / "dog.json").write_text('"dog"')
    for f in ("five.json", "dog.json"):
        assert "must hold a JSON list of strings" in usage_error(
            "tag", img, "--labels", tmp_path / f, "--model", NO_MODEL
        )
    # a value that looks like a file name must exist: it is not silently used as a label
    for missing in ("labels.txt", "tags.json", str(tmp_path / "nope")):
        assert f"label file {missing} does not exist" in usage_error(
            "tag", img, "--labels", missing, "--model", NO_MODEL
        )
    assert "path separator" in run("tag", "--help").stdout
    res = run("tag", img, "--labels", "T-Shirt (red),a dog", "--model", models_dir / "retrieval")
    assert res.exit_code == 0 and {t["label"] for t in jsonl(res.stdout)[0]["tags"]} == {"T-Shirt (red)", "a dog"}


def test_rank_unreadable_texts_are_usage_errors(images, tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert "latin1.txt is not UTF-8" in usage_error("rank", "--images", images, "--texts", latin1, "--model", NO_MODEL)
    assert "is a folder" in usage_error("rank", "--images", images, "--texts", images, "--model", NO_MODEL)
