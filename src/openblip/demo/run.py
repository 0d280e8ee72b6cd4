"""``run_demo``: world -> pre-training -> VQA fine-tuning -> evaluation -> ``metrics.json``, gallery, saved models."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from openblip.demo import evaluate as ev
from openblip.demo.data import prepare_data
from openblip.demo.settings import METRIC_KEYS, DemoConfig
from openblip.demo.train import build_pretrain_model, finetune_vqa, pretrain, pretrain_vit, task_model


def baselines(info_baselines: dict[str, Any], test_n_retrieval: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The chance / prior value to print beside each metric (``None`` where there is none)."""
    b = info_baselines.get("test") or {}
    vqa = b.get("vqa") or {}
    per_type = vqa.get("per_type") or {}
    n = max(1, test_n_retrieval)
    return {
        "caption_exact": (b.get("caption") or {}).get("exact_match"),
        "caption_token_acc": extra.get("bigram_token_acc"),
        "bleu4": extra.get("prior_bleu4"),
        "cider": extra.get("prior_cider"),
        "itc_i2t_r1": 1 / n,
        "itc_t2i_r1": 1 / n,
        "itc_i2t_r5": min(1.0, 5 / n),
        "itc_t2i_r5": min(1.0, 5 / n),
        "itm_i2t_r1": 1 / n,
        "itm_t2i_r1": 1 / n,
        "itm_hardneg_acc": 0.5,
        "vqa_acc": vqa.get("question_only_accuracy"),
        "vqa_color_acc": (per_type.get("color") or {}).get("question_only"),
    }


BASELINE_NAMES = {
    "caption_exact": "most frequent train caption",
    "caption_token_acc": "text-only bigram",
    "bleu4": "most frequent train caption",
    "cider": "most frequent train caption",
    "itc_i2t_r1": "chance",
    "itc_t2i_r1": "chance",
    "itc_i2t_r5": "chance",
    "itc_t2i_r5": "chance",
    "itm_i2t_r1": "chance",
    "itm_t2i_r1": "chance",
    "itm_hardneg_acc": "chance",
    "vqa_acc": "question-only prior",
    "vqa_color_acc": "question-only prior",
}


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = ev.log_to_stderr) -> dict[str, Any]:
    """Run the whole demo into ``cfg.out`` and return the metrics dict (also written to ``metrics.json``)."""
    t_all = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    t = time.perf_counter()
    # a reused world that cannot be loaded is regenerated (logged); see prepare_data
    info, reused, train_data, test_data = prepare_data(
        out / "world", cfg.n_train, cfg.n_test, cfg.image_size, cfg.seed, cfg.n_retrieval, log
    )
    t_world = time.perf_counter() - t
    log(
        f"world {'reused' if reused else 'generated'} in {out / 'world'}: {cfg.n_train} train scenes "
        f"({len(train_data.vqa_question)} questions), {cfg.n_test} test scenes "
        f"({len(test_data.vqa_question)} questions; {len(test_data.retrieval_index)} with distinct captions "
        f"for retrieval) [{t_world:.0f}s]"
    )

    model = build_pretrain_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg.vit_steps > 0:
        log(
            f"supervised ViT stage (the demo's stand-in for BLIP's ImageNet-trained ViT): {cfg.vit_steps} steps of "
            f"{cfg.batch_size} scenes, naming each object's shape, colour and size"
        )
    vit_stats = pretrain_vit(model, cfg, train_data, log)
    log(
        f"pre-training a BLIP of {n_params / 1e6:.1f}M parameters from scratch: {cfg.steps} steps of {cfg.batch_size} "
        f"({cfg.describe_objective()}), "
        f"{torch.get_num_threads()} threads"
    )
    pre_stats = pretrain(model, cfg, train_data, log)
    vqa_model = pre_stats.pop("vqa_model", None) or task_model(model, cfg, "vqa")
    log(f"fine-tuning VQA from the pre-trained weights: {cfg.vqa_steps} steps of {cfg.vqa_batch_size}")
    vqa_stats = finetune_vqa(vqa_model, cfg, train_data, log)
    train_seconds = vit_stats["seconds"] + pre_stats["seconds"] + vqa_stats["seconds"]

    # model/: the captioner (`openblip caption --model OUT/model`), retrieval_model/ (`openblip match`/`rank`),
    # vqa_model/ (`openblip vqa`), pretrain_model/ (every pre-trained tensor, to continue training)
    task_model(model, cfg, "caption").save_pretrained(out / "model")
    task_model(model, cfg, "retrieval").save_pretrained(out / "retrieval_model")
    vqa_model.save_pretrained(out / "vqa_model")
    model.save_pretrained(out / "pretrain_model")

    t = time.perf_counter()
    log("evaluating on the held-out test scenes ...")
    embeds = ev.image_embeds(model, test_data.pixels)
    metrics: dict[str, Any] = {}
    cap_metrics, generated = ev.evaluate_captions(model, test_data, cfg, embeds, log)
    metrics.update(cap_metrics)
    ret_metrics, ret_detail = ev.evaluate_retrieval(model, test_data, cfg, embeds)
    metrics.update(ret_metrics)
    hn = ev.evaluate_hard_negatives(model, test_data, embeds)
    metrics["itm_hardneg_acc"] = hn["itm_hardneg_acc"]
    vqa_metrics, vqa_preds = ev.evaluate_vqa(vqa_model, test_data)
    metrics.update({k: vqa_metrics[k] for k in ("vqa_acc", "vqa_color_acc")})
    extra: dict[str, Any] = {"bigram_token_acc": ev.bigram_token_accuracy(train_data.captions, test_data.references)}
    if cfg.coco_metrics and metrics.get("bleu4") is not None:
        top = (info.baselines.get("test") or {}).get("caption", {}).get("most_frequent_train_caption")
        if top:
            prior = ev._coco([top] * len(test_data.references), test_data.references, log)
            extra["prior_bleu4"], extra["prior_cider"] = prior["bleu4"], prior["cider"]
    t_eval = time.perf_counter() - t

    metrics["train_steps"] = int(vit_stats["steps"] + pre_stats["steps"] + vqa_stats["steps"])
    metrics["train_seconds"] = float(train_seconds)
    base = baselines(info.baselines, len(test_data.retrieval_index), extra)
    result = {k: metrics.get(k) for k in METRIC_KEYS}
    result.update(
        {
            "vit_steps": vit_stats["steps"],
            "vit_seconds": vit_stats["seconds"],
            "vit_final_shape_acc": vit_stats.get("final_shape_acc"),
            "pretrain_steps": pre_stats["steps"],
            "vqa_steps": vqa_stats["steps"],
            "pretrain_seconds": pre_stats["seconds"],
            "vqa_seconds": vqa_stats["seconds"],
            "pretrain_steps_per_second": pre_stats["steps"] / max(pre_stats["seconds"], 1e-9),
            "itm_i2t_r5": metrics.get("itm_i2t_r5"),
            "itm_t2i_r5": metrics.get("itm_t2i_r5"),
            "itm_hardneg_by_kind": hn["itm_hardneg_by_kind"],
            "vqa_by_type": vqa_metrics["vqa_by_type"],
            "baselines": base,
            "final_losses": {k: v for k, v in {**pre_stats, **vqa_stats}.items() if k.startswith("final_")},
            "itc_temperature": pre_stats.get("temp"),
            "n_test_scenes": len(test_data.paths),
            "n_test_questions": len(test_data.vqa_question),
            "n_retrieval": len(test_data.retrieval_index),
            "world_seconds": t_world,
            "eval_seconds": t_eval,
            "scale": "fractions in [0, 1]; bleu4 and cider on pycocoevalcap's scale (openblip.eval's percent / 100)",
            "config": cfg.to_dict(),
            "machine": {
                "threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "torch": torch.__version__,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
        }
    )
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    samples = {
        "generated": generated,
        "vqa_predictions": vqa_preds,
        "retrieval": ret_detail,
        "itm_pos_prob": hn["itm_pos_prob"].tolist(),
        "itm_neg_prob": hn["itm_neg_prob"].tolist(),
    }
    if cfg.gallery:
        from openblip.demo.report import write_gallery

        write_gallery(out, test_data, result, samples, cfg)
    result["total_seconds"] = time.perf_counter() - t_all
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"done in {result['total_seconds']:.0f}s (training {train_seconds:.0f}s, evaluation {t_eval:.0f}s)")
    return result
