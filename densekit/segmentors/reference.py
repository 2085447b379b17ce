"""The authors' inference loop, restated step by step on a densekit model: the yardstick of
``tools/benchmark.py --reference``.

SCLIP's ``clip_segmentor.py`` / NACLIP's ``naclip.py`` / ClearCLIP's ``clearclip_segmentor.py``
encode each class name's 80 prompts at the full context length (one ``encode_text`` call per
name), run every sliding window through the whole image tower one at a time (including CLIP's
original last block, which only feeds the global embedding), add each window's logits into the
full-size map through ``F.pad``, resize to the original size, refine with PAMR, and post-process
with a one-hot product per class. Nothing here is faster than the segmentor; it exists so that a
benchmark can print the speed ratio *and* the largest difference of the outputs in one run.
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def reference_text_embeddings(text_encoder, names: Sequence[str],
                              templates: Sequence[str]) -> torch.Tensor:
    """Per name: its templates at the full context length, one batch per name, normalised,
    averaged, normalised (the authors' ``__init__``). ``[len(names), D]``."""
    tower = text_encoder.tower
    device = next(tower.parameters()).device
    out = []
    for name in names:
        tokens = text_encoder.tokenizer([t.format(name) for t in templates]).to(device)
        feat = tower(tokens)                                         # the full 77 tokens
        feat = F.normalize(feat.to(torch.promote_types(feat.dtype, torch.float32)), dim=-1)
        feat = feat.mean(0)
        out.append(F.normalize(feat, dim=0))
    return torch.stack(out)


@torch.no_grad()
def reference_logits(model, inputs: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine maps ``[1, Q, H, W]`` of ``inputs [1, 3, H, W]`` as the authors' ``forward_slide``
    (``model.test_cfg`` slide) or ``forward_feature`` (whole) compute them: one crop at a time,
    the full tower, ``preds += F.pad(crop_logits, ...)``."""
    def forward_feature(img):
        pad = model._patch_padding(*img.shape[-2:]) if model.pad_to_patch else (0, 0, 0, 0)
        h, w = img.shape[-2:]
        x = F.pad(img, pad) if any(pad) else img
        dense = model.backbone.forward_dense(x, with_global=True)['dense']
        dense = dense.to(torch.promote_types(dense.dtype, torch.float32))
        dense = dense / dense.norm(dim=1, keepdim=True)
        logits = torch.einsum('bdhw,qd->bqhw', dense, text_embeds.to(dense))
        logits = F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return logits[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]

    cfg = model.test_cfg
    if cfg.get('mode', 'whole') != 'slide':
        return forward_feature(inputs)
    (h_stride, w_stride), (h_crop, w_crop) = cfg['stride'], cfg['crop_size']
    batch, _, h_img, w_img = inputs.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = inputs.new_zeros((batch, text_embeds.shape[0], h_img, w_img))
    count = inputs.new_zeros((batch, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_logits = forward_feature(inputs[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_logits, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


@torch.no_grad()
def reference_predict(model, inputs: torch.Tensor, text_embeds: torch.Tensor,
                      query_class: torch.Tensor, ori_shape=None) -> List[torch.Tensor]:
    """``(logits [1, Q, H, W], class probabilities [K, H, W], labels [1, H, W])`` of one image
    as the authors' ``predict`` + ``postprocess_result`` compute them (SCLIP's area rule and
    NACLIP's renormalisation follow ``model.area_thd`` / ``model.renorm_scores``)."""
    logits = reference_logits(model, inputs, text_embeds)
    ori = tuple(ori_shape or inputs.shape[-2:])
    seg = F.interpolate(logits, size=ori, mode='bilinear', align_corners=False)
    if model.refine is not None:
        img = F.interpolate(inputs, size=ori, mode='bilinear', align_corners=False)
        seg = model.refine(img, seg)
    probs = torch.softmax(seg[0] * model.logit_scale, dim=0)
    num_cls, num_queries = int(query_class.max()) + 1, len(query_class)
    if num_cls != num_queries:
        one_hot = F.one_hot(query_class).T.view(num_cls, num_queries, 1, 1)
        probs = (probs.unsqueeze(0) * one_hot).max(1)[0]
    if model.area_thd is not None:
        pred = F.one_hot(probs.argmax(0), num_cls).to(probs.dtype)
        area = pred[:, :, 1:].sum((0, 1), keepdim=True)
        area = (area > model.area_thd * area.sum()).to(probs.dtype)
        probs[1:] *= area.transpose(0, -1)
    pred = probs.argmax(0, keepdim=True)
    pred[probs.max(0, keepdim=True)[0] < model.prob_thd] = model.bg_index
    if model.renorm_scores:
        probs = probs / probs.sum(0, keepdim=True)
    return logits, probs, pred
