"""MED, BLIP's multimodal mixture of encoder-decoder: a BERT whose every layer also owns a cross-attention.

Matches salesforce/BLIP ``models/med.py`` (a modified HF-BERT 4.15) and ``models/nlvr_encoder.py``:

* embeddings = word + absolute position, LayerNorm, dropout. **No token-type embeddings.**
* each layer: self-attention -> cross-attention to image (or question) states -> FFN, post-norm as in BERT.
  The cross-attention is *executed* only in multimodal mode; ``mode="text"`` is the unimodal text encoder.
* ``is_decoder=True`` gives the causal image-grounded decoder (``[DEC]`` first token).
* masks: self-attention uses ``(1 - m) * -10000``; cross-attention uses 4.15's ``invert_attention_mask``,
  ``(1 - m) * -1e9`` (``-1e4`` in float16).
* NLVR2 variant (``twin_cross_attention=True``): two cross-attentions per layer (``self0``/``self1`` over image 0
  and image 1, output ``dense0``/``dense1`` and one shared LayerNorm); layers below ``merge_from_layer`` average
  the two, later layers concatenate them and apply ``merge_layer`` (Linear 2D -> D, no activation: the
  original has the activation commented out).

Parameter names are BERT's, as in the official checkpoints and the Hugging Face BLIP classes.

Speed features (not in the original, results unchanged): a self-attention KV cache for decoding, and
cross-attention keys/values that can be computed once per image (:meth:`BertModel.cross_kv`) and shared by
``r`` query rows per image (beams, or several answers per question) without copies: the ``r`` rows' queries
are laid side by side along the sequence axis of the image's single key/value set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openblip.config import TextConfig
from openblip.layers.attention import attention, merge_heads, split_heads
from openblip.layers.linear import Linear, linear

KV = tuple[torch.Tensor, torch.Tensor]


def self_attention_mask(mask: torch.Tensor, dtype: torch.dtype, causal: bool, query_len: int) -> torch.Tensor:
    """Additive self-attention mask ``[B, 1, Lq, Lk]`` as HF-BERT 4.15 ``get_extended_attention_mask``.

    ``mask`` is ``[B, Lk]`` (1 = attend) over past + current tokens; with ``causal`` the last ``query_len``
    positions see only themselves and earlier ones.
    """
    m = mask[:, None, None, :].to(dtype)
    if causal:
        lk = mask.shape[1]
        q_pos = torch.arange(lk - query_len, lk, device=mask.device)[:, None]
        k_pos = torch.arange(lk, device=mask.device)[None, :]
        m = m * (k_pos <= q_pos).to(dtype)[None, None]
    return (1.0 - m) * -10000.0


def cross_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive cross-attention mask ``[B, 1, 1, Lk]``: 4.15 ``invert_attention_mask``."""
    big = 1e4 if dtype == torch.float16 else 1e9
    return (1.0 - mask[:, None, None, :].to(dtype)) * -big


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        # The official checkpoints store this buffer (persistent in med.py); we keep it out of the state dict
        # like transformers does, and the loader checks the stored one is the identity arange.
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, past_length: int = 0) -> torch.Tensor:
        n = input_ids.shape[1]
        pos = self.position_ids[:, past_length : past_length + n]
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head attention with BERT names (``query``, ``key``, ``value``); ``kv_width`` > hidden for ViT-L."""

    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.query = Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = Linear(kv_width, cfg.hidden_size)
        self.value = Linear(kv_width, cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout

    def project_kv(self, states: torch.Tensor) -> KV:
        return split_heads(self.key(states), self.num_heads), split_heads(self.value(states), self.num_heads)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        past: KV | None = None,
        kv: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """Self-attention (``kv`` None; optional ``past`` cache) or cross-attention on precomputed ``kv``.

        For cross-attention ``kv`` may hold ``B / r`` rows for ``B`` query rows: each key/value row serves ``r``
        consecutive query rows (the ``repeat_interleave`` layout of beams).
        """
        p = self.dropout_p if self.training else 0.0
        q = split_heads(self.query(hidden), self.num_heads)  # [B, H, L, Dh]
        if kv is None:  # self-attention
            k, v = self.project_kv(hidden)
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            return merge_heads(attention(q, k, v, mask, p)), (k, v)
        k, v = kv
        b, h, lq, d = q.shape
        bk = k.shape[0]
        if bk == b:
            out = attention(q, k, v, mask, p)
        else:  # r query rows per key/value row: fold them into the query length, no K/V copies
            r = b // bk
            if r * bk != b:
                raise ValueError(f"{b} query rows cannot share {bk} cross-attention key/value rows")
            qf = q.view(bk, r, h, lq, d).transpose(1, 2).reshape(bk, h, r * lq, d)
            out = attention(qf, k, v, mask, p).view(bk, h, r, lq, d).transpose(1, 2).reshape(b, h, lq, d)
        return merge_heads(out), kv


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width)
        self.output = BertSelfOutput(cfg)


class TwinSelfOutput(nn.Module):
    """NLVR2 cross-attention output: ``dense0``/``dense1``, averaged or merged, then one LayerNorm."""

    def __init__(self, cfg: TextConfig, merge: bool) -> None:
        super().__init__()
        self.dense0 = Linear(cfg.hidden_size, cfg.hidden_size)
        self.dense1 = Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.merge = merge
        if merge:
            self.merge_layer = Linear(2 * cfg.hidden_size, cfg.hidden_size)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h0, h1 = self.dense0(x0), self.dense1(x1)
        h = self.merge_layer(torch.cat([h0, h1], dim=-1)) if self.merge else (h0 + h1) / 2
        return self.LayerNorm(self.dropout(h) + residual)


class TwinCrossAttention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int, merge: bool) -> None:
        super().__init__()
        self.self0 = BertSelfAttention(cfg, kv_width)
        self.self1 = BertSelfAttention(cfg, kv_width)
        self.output = TwinSelfOutput(cfg, merge)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertOutput(BertSelfOutput):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__(cfg)
        self.dense = Linear(cfg.intermediate_size, cfg.hidden_size)


class BertLayer(nn.Module):
    def __init__(self, cfg: TextConfig, encoder_width: int, twin: bool = False, merge: bool = False) -> None:
        super().__init__()
        self.attention = BertAttention(cfg, cfg.hidden_size)
        self.twin = twin
        self.crossattention: nn.Module
        if twin:
            self.crossattention = TwinCrossAttention(cfg, encoder_width, merge)
        else:
            self.crossattention = BertAttention(cfg, encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def cross_kv(self, states: torch.Tensor | list[torch.Tensor]) -> KV | list[KV]:
        if self.twin:
            return [self.crossattention.self0.project_kv(states[0]), self.crossattention.self1.project_kv(states[1])]
        return self.crossattention.self.project_kv(states)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        cross_kv: KV | list[KV] | None,
        cross_mask: torch.Tensor | list[torch.Tensor | None] | None,
        past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        ctx, present = self.attention.self(x, self_mask, past=past)
        x = self.attention.output(ctx, x)
        if cross_kv is not None:
            ca = self.crossattention
            if self.twin:
                c0, _ = ca.self0(x, cross_mask[0], kv=cross_kv[0])
                c1, _ = ca.self1(x, cross_mask[1], kv=cross_kv[1])
                x = ca.output(c0, c1, x)
            else:
                c, _ = ca.self(x, cross_mask, kv=cross_kv)
                x = ca.output(c, x)
        return self.output(self.intermediate(x), x), present


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextConfig, encoder_width: int, twin: bool, merge_from_layer: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(cfg, encoder_width, twin=twin, merge=twin and i >= merge_from_layer)
            for i in range(cfg.num_layers)
        )


@dataclass
class TextOutput:
    last_hidden_state: torch.Tensor
    past_key_values: list[KV] | None = None


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's ``_init_weights``: normal(0, std) for Linear/Embedding, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BertModel(nn.Module):
    """The MED text transformer (``BertModel(add_pooling_layer=False)`` in the original).

    Args:
        cfg: text config.
        encoder_width: width of the states the cross-attention reads (the ViT width, or the text width for the
            VQA answer decoder that attends to question states).
        twin_cross_attention: the NLVR2 variant with two cross-attentions per layer.
        merge_from_layer: NLVR2 only; first layer that merges instead of averaging.
    """

    def __init__(
        self,
        cfg: TextConfig,
        encoder_width: int,
        twin_cross_attention: bool = False,
        merge_from_layer: int = 6,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg, encoder_width, twin_cross_attention, merge_from_layer)
        self.twin = twin_cross_attention
        init_bert_weights(self, cfg.initializer_range)

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.word_embeddings.weight.dtype

    def cross_kv(self, encoder_hidden_states: torch.Tensor | list[torch.Tensor]) -> list[KV | list[KV]]:
        """Per-layer cross-attention keys/values over the encoder states, to reuse across calls."""
        return [layer.cross_kv(encoder_hidden_states) for layer in self.encoder.layer]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | list[torch.Tensor] | None = None,
        encoder_attention_mask: torch.Tensor | list[torch.Tensor] | None = None,
        mode: str = "multimodal",
        is_decoder: bool = False,
        past_key_values: list[KV] | None = None,
        use_cache: bool = False,
        cross_kv: list | None = None,
    ) -> TextOutput:
        """Run the text transformer.

        Args:
            input_ids: ``[B, L]`` token ids (the caller sets the first token: [CLS], [ENC] or [DEC]).
            attention_mask: ``[B, L_past + L]``, 1 for real tokens; all ones when omitted.
            encoder_hidden_states: ``[B', Lk, Dk]`` image (or question) states, or a pair of them for NLVR2.
            encoder_attention_mask: ``[B', Lk]`` (or a pair); all ones when omitted.
            mode: ``"multimodal"`` runs the cross-attention, ``"text"`` skips it (unimodal encoder).
            is_decoder: causal self-attention.
            past_key_values: self-attention cache from a previous call (decoding).
            use_cache: return the updated self-attention cache.
            cross_kv: precomputed :meth:`cross_kv`; replaces ``encoder_hidden_states``.
        """
        if mode not in ("multimodal", "text"):
            raise ValueError(f"mode must be 'multimodal' or 'text', got {mode!r}")
        b, n = input_ids.shape
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        dtype = self.dtype
        if attention_mask is None:
            attention_mask = torch.ones(b, past_len + n, dtype=torch.long, device=input_ids.device)
        self_mask = None
        if is_decoder or not bool(attention_mask.all()):
            self_mask = self_attention_mask(attention_mask, dtype, causal=is_decoder, query_len=n)

        cross_mask = None
        if mode == "multimodal":
            if cross_kv is None:
                if encoder_hidden_states is None:
                    raise ValueError("multimodal mode needs encoder_hidden_states or cross_kv")
                cross_kv = self.cross_kv(encoder_hidden_states)
            if encoder_attention_mask is not None:
                if self.twin:
                    cross_mask = [None if m is None else cross_attention_mask(m, dtype) for m in encoder_attention_mask]
                else:
                    cross_mask = cross_attention_mask(encoder_attention_mask, dtype)
            elif self.twin:
                cross_mask = [None, None]
        else:
            cross_kv = None

        x = self.embeddings(input_ids, past_length=past_len)
        presents: list[KV] = []
        for i, layer in enumerate(self.encoder.layer):
            past = None if past_key_values is None else past_key_values[i]
            x, present = layer(x, self_mask, None if cross_kv is None else cross_kv[i], cross_mask, past)
            if use_cache:
                presents.append(present)
        return TextOutput(x, presents if use_cache else None)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(cfg)
        self.decoder = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.decoder.bias = self.bias  # the same Parameter under both names, as in BERT

    def forward(self, x: torch.Tensor, float32_logits: bool = False) -> torch.Tensor:
        """Logits ``[..., V]``. With ``float32_logits`` a bfloat16/float16 head computes in float32 (see
        :meth:`float32_logits`); otherwise in the head's own dtype."""
        if float32_logits and x.dtype != torch.float32:
            return self.float32_logits(x)
        return self.decoder(self.transform(x))

    def reset_float32_cache(self) -> None:
        """Drop the cached float32 copy of the head (see :meth:`float32_logits`)."""
        self.__dict__.pop("_float32_cache", None)

    @torch.no_grad()
    def float32_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head in float32 for a low-precision model, used by generation.

        Stored in bfloat16, a logit near 15 is rounded to a multiple of 1/16, so in beam search hypotheses whose
        scores differ by less than that swap places, and a trained model's captions change: on the demo model, 62%
        of bfloat16 captions were identical to float32 ones with a bfloat16 head and 95% with a float32 head. The
        head is ~15% of a base decoder step's FLOPs (768 x 30,522), about 2% of a whole caption with its ViT.
        A float32 copy of the head's parameters is cached and refreshed when they change in place; changes made
        through ``.data`` bypass the version counter the cache watches, so :func:`openblip.generation.generate`
        calls :meth:`reset_float32_cache` once per call (one copy per call, not per decoding step).
        """
        t = self.transform
        params = (t.dense.weight, t.dense.bias, t.LayerNorm.weight, t.LayerNorm.bias, self.decoder.weight, self.bias)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        cache = self.__dict__.get("_float32_cache")
        if cache is None or cache[0] != key:
            cache = (key, tuple(p.detach().float() for p in params))
            self.__dict__["_float32_cache"] = cache
        dw, db, lw, lb, w, b = cache[1]
        h = linear(x.float(), dw, db)
        h = F.layer_norm(F.gelu(h), (h.shape[-1],), lw, lb, t.LayerNorm.eps)
        return linear(h, w, b)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(cfg)


class BertLMHeadModel(nn.Module):
    """The image-grounded text decoder: causal :class:`BertModel` + LM head tied to the word embeddings."""

    def __init__(self, cfg: TextConfig, encoder_width: int) -> None:
        super().__init__()
        self.bert = BertModel(cfg, encoder_width)
        self.cls = BertOnlyMLMHead(cfg)
        init_bert_weights(self.cls, cfg.initializer_range)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: list[KV] | None = None,
        use_cache: bool = False,
        cross_kv: list | None = None,
        last_only: bool = False,
        float32_logits: bool = False,
    ) -> tuple[torch.Tensor, list[KV] | None]:
        """Return LM logits ``[B, L, V]`` (``[B, 1, V]`` with ``last_only``) and the self-attention cache.
        ``float32_logits``: a low-precision model's LM head computes in float32 (generation does this)."""
        out = self.bert(
            input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            is_decoder=True,
            past_key_values=past_key_values,
            use_cache=use_cache,
            cross_kv=cross_kv,
        )
        h = out.last_hidden_state[:, -1:] if last_only else out.last_hidden_state
        return self.cls.predictions(h, float32_logits), out.past_key_values
