"""The attribute probe: a small learned reader of world videos for evaluation.

The analytic checker (``dollar.checker``) reads colour and motion but not shape. The probe
reads colour, shape, motion, size and speed, and gives the feature space that the Frechet
distance ("FVD" of this world), feature diversity and subject consistency are measured in.

Architecture: a per-frame 2-D stem (two stride-2 convs, 64 -> 16 px) gives appearance maps;
coordinate channels are appended and two stride-2 3-D convs read motion; the time axis is
kept (spatial pooling only) and flattened into one feature vector. Heads:

* ``colour_logits``: which colours are present (multi-label, sigmoid), from the plain features;
* for a *query colour* (FiLM on the stem maps), the shape, motion, size and speed of the
  object of that colour: this binds attributes to objects in two-object scenes.

Shape has its own head on an object-centred view: a per-pixel "is this the query colour" gate
(trained against the world's ground-truth object masks) turns every 4th frame into the
silhouette of the queried object; the silhouette is cropped around its centroid at a size set
by its radius of gyration and resampled to a fixed grid (``grid_sample``), so position and size
(small, large, growing, shrinking) are taken out before a small 2-D CNN reads the outline. The
shape head sees only these silhouette features: colour and motion cannot leak into it, which is
what lets it read the held-out colour-shape combinations it never saw together. The same masks
give the queried object's track (centroid, radius, area per frame), which the motion, size and
speed heads read beside the clip features: in two-object scenes it says which object does what.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from dollar import world

QUERY_HEADS = ("shape", "motion", "size", "speed")
# Speed changes nothing in these motions (see world._trajectory), so it has no label there.
SPEEDLESS_MOTIONS = ("static", "growing", "shrinking")


class AttributeProbe(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        colours: tuple[str, ...] = world.COLOURS,
        shapes: tuple[str, ...] = world.SHAPES,
        motions: tuple[str, ...] = world.MOTIONS,
        sizes: tuple[str, ...] = world.SIZES,
        speeds: tuple[str, ...] = world.SPEEDS,
        stem_channels: tuple[int, int] = (16, 24),
        temporal_channels: int = 32,
        feature_dim: int = 64,
        num_frames: int = world.NUM_FRAMES,
        frame_stride: int = 2,
        silhouette_channels: tuple[int, int, int] = (16, 24, 24),
        silhouette_frame_stride: int = 4,
        crop_size: int = 32,
        crop_scale: float = 2.5,
    ):
        super().__init__()
        c1, c2 = stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1),
            nn.GroupNorm(4, c1),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.GroupNorm(4, c2),
            nn.SiLU(),
            nn.Conv2d(c2, c2, 3, padding=1),  # a wider view at 16x16: corners and edges -> shapes
            nn.GroupNorm(4, c2),
            nn.SiLU(),
        )
        # FiLM from the query colour (index len(colours) = no query).
        self.query_film = nn.Embedding(len(colours) + 1, 2 * c2)
        nn.init.zeros_(self.query_film.weight)
        tc = temporal_channels
        self.temporal = nn.Sequential(
            nn.Conv3d(c2 + 2, tc, 3, stride=2, padding=1),
            nn.GroupNorm(4, tc),
            nn.SiLU(),
            nn.Conv3d(tc, tc, 3, stride=2, padding=1),
            nn.GroupNorm(4, tc),
            nn.SiLU(),
        )
        t_in = (num_frames - 1) // frame_stride + 1
        t_out = ((t_in - 1) // 2) // 2 + 1  # two stride-2 convs with padding 1
        self.to_features = nn.Linear(2 * tc * t_out + c2, feature_dim)
        self.colour_head = nn.Linear(feature_dim, len(colours))
        # The silhouette path: per-pixel colour codes . query code -> a soft mask of the queried
        # object, read at full resolution.
        code = 16
        self.pixel_code = nn.Sequential(nn.Conv2d(3, 32, 1), nn.SiLU(), nn.Conv2d(32, 32, 1), nn.SiLU(), nn.Conv2d(32, code, 1))
        self.query_code = nn.Embedding(len(colours) + 1, code + 1)  # code and bias
        s1, s2, s3 = silhouette_channels
        self.silhouette = nn.Sequential(  # on the object-centred crop_size x crop_size silhouette
            nn.Conv2d(1, s1, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(s1, s2, 3, stride=2, padding=1),
            nn.GroupNorm(4, s2),
            nn.SiLU(),
            nn.Conv2d(s2, s3, 3, stride=2, padding=1),
            nn.GroupNorm(4, s3),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),  # the crop is centred and scaled: where an edge is, is the shape
            nn.Flatten(),
            nn.Linear(16 * s3, feature_dim),
            nn.SiLU(),
        )
        t_sil = (num_frames - 1) // silhouette_frame_stride + 1
        self.track = nn.Sequential(nn.Linear(4 * t_sil, feature_dim), nn.SiLU(), nn.Linear(feature_dim, feature_dim), nn.SiLU())
        self.query_heads = nn.ModuleDict(
            {name: nn.Linear(2 * feature_dim + c2, len(self._vocab(name))) for name in QUERY_HEADS if name != "shape"}
        )
        self.shape_head = nn.Linear(feature_dim, len(shapes))

    def _vocab(self, head: str) -> tuple[str, ...]:
        return tuple(self.config[head + "s"])

    # --- inputs ---------------------------------------------------------------------------

    def prepare(self, frames) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` (numpy or tensor) -> float ``[B, 3, T, H, W]`` in [-1, 1]."""
        x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        return (x.to(self.device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0).contiguous()

    # --- network --------------------------------------------------------------------------

    def stem_maps(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> appearance maps ``[B, C, T', H/4, W/4]`` of every
        ``frame_stride``-th frame."""
        video = video[:, :, :: self.config.frame_stride]
        b, c, t, h, w = video.shape
        x = self.stem(video.transpose(1, 2).reshape(b * t, c, h, w))
        return x.view(b, t, *x.shape[1:]).transpose(1, 2)

    def query_mask_logits(self, video: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T', H, W]`` of "this pixel belongs to the object of the query colour" in
        every ``silhouette_frame_stride``-th frame of ``video`` ``[B, 3, T, H, W]`` (shapes do not
        change over a clip, so a few frames are enough)."""
        video = video[:, :, :: self.config.silhouette_frame_stride]
        b, c, t, h, w = video.shape
        codes = self.pixel_code(video.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1, h, w)
        q = self.query_code(query)  # [B, code + 1]
        return torch.einsum("btchw,bc->bthw", codes, q[:, :-1]) + q[:, -1, None, None, None]

    def query_mask(self, video: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Soft mask ``[B, T', H, W]`` of the queried object (see :meth:`query_mask_logits`)."""
        return torch.sigmoid(self.query_mask_logits(video, query))

    @staticmethod
    def mask_geometry(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Centroid (x, y in [-1, 1]), radius of gyration and area (share of the frame) of soft
        masks ``[N, H, W]``, each ``[N]``, without gradient. Only confident pixels count: a
        faint haze over the background would otherwise pull the centre and blow up the spread."""
        n, h, w = mask.shape
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=mask.device).view(1, h, 1)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=mask.device).view(1, 1, w)
        m = mask.detach()
        confident = m * (m > 0.5)
        m = torch.where(confident.sum((1, 2), keepdim=True) >= 1, confident, m)
        total = m.sum((1, 2)).clamp_min(1e-3)
        cx, cy = (m * xs).sum((1, 2)) / total, (m * ys).sum((1, 2)) / total
        spread = (m * ((xs - cx.view(-1, 1, 1)) ** 2 + (ys - cy.view(-1, 1, 1)) ** 2)).sum((1, 2)) / total
        return cx, cy, spread.clamp_min(1e-6).sqrt(), confident.sum((1, 2)) / (h * w)

    def track_features(self, mask: torch.Tensor) -> torch.Tensor:
        """The queried object's track ``[B, 4 T']`` from its masks ``[B, T', H, W]``: centroid
        relative to the first frame, radius of gyration and area per frame (where it goes, how
        big it is and whether it grows), for the motion, size and speed heads."""
        b, t, h, w = mask.shape
        cx, cy, radius, area = (g.view(b, t) for g in self.mask_geometry(mask.reshape(b * t, h, w)))
        return torch.cat([cx - cx[:, :1], cy - cy[:, :1], 4 * radius, 10 * area], dim=1)

    def object_crops(self, mask: torch.Tensor) -> torch.Tensor:
        """Object-centred views ``[N, 1, S, S]`` of soft masks ``[N, H, W]``: centred on the mask's
        centroid, ``crop_scale`` radii of gyration to each side, resampled to ``crop_size``."""
        n, h, w = mask.shape
        cx, cy, radius, _ = self.mask_geometry(mask)
        half = (self.config.crop_scale * radius).clamp(2 / w, 1.0)
        zero = torch.zeros_like(half)
        theta = torch.stack([torch.stack([half, zero, cx], 1), torch.stack([zero, half, cy], 1)], 1)  # [N, 2, 3]
        size = self.config.crop_size
        grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
        return F.grid_sample(mask[:, None], grid, align_corners=False, padding_mode="zeros")

    def silhouette_features(self, video: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Shape features ``[B, D]`` of the queried object: its object-centred silhouette read by
        a small CNN, averaged over the frames."""
        mask = self.query_mask(video, query) if mask is None else mask
        b, t, h, w = mask.shape
        x = self.silhouette(self.object_crops(mask.reshape(b * t, h, w)))
        return x.view(b, t, -1).mean(1)

    def _features_from_maps(self, maps: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip features [B, D], max-pooled local appearance [B, C]) under a query colour."""
        gamma, beta = self.query_film(query).chunk(2, dim=-1)
        x = maps * (1 + gamma[:, :, None, None, None]) + beta[:, :, None, None, None]
        b, _, t, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, 1, h, 1).expand(b, 1, t, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, 1, w).expand(b, 1, t, h, w)
        # local appearance (corners, edges: the shape) max-pooled over the clip, beside the
        # motion path; max pooling finds a small object anywhere, mean pooling keeps the scene
        appearance = x.amax((2, 3, 4))
        x = self.temporal(torch.cat([x, ys, xs], dim=1))
        return self.to_features(torch.cat([appearance, x.amax((3, 4)).flatten(1), x.mean((3, 4)).flatten(1)], dim=1)), appearance

    def forward(self, video: torch.Tensor, query: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``video`` float ``[B, 3, T, H, W]`` in [-1, 1]; ``query`` colour indices ``[B]`` or None.

        Returns ``features`` [B, D] and ``colour_logits`` [B, colours]; with a query also
        ``shape_logits``, ``motion_logits``, ``size_logits``, ``speed_logits`` of the object of
        that colour, and ``mask_logits`` [B, T', H, W] of where it is.
        """
        maps = self.stem_maps(video)
        none = torch.full((video.shape[0],), len(self.config.colours), dtype=torch.long, device=video.device)
        features, _ = self._features_from_maps(maps, none)
        out = {"features": features, "colour_logits": self.colour_head(features)}
        if query is not None:
            features_q, appearance = self._features_from_maps(maps, query)
            mask_logits = self.query_mask_logits(video, query)
            mask = torch.sigmoid(mask_logits)
            # motion, size, speed: the queried clip features beside the queried object's own track
            q = torch.cat([F.silu(features_q), appearance, self.track(self.track_features(mask))], dim=1)
            out.update({f"{name}_logits": head(q) for name, head in self.query_heads.items()})
            out["mask_logits"] = mask_logits
            out["shape_logits"] = self.shape_head(self.silhouette_features(video, query, mask))
        return out

    # --- reading videos -------------------------------------------------------------------

    @torch.no_grad()
    def features(self, frames, batch_size: int = 64) -> np.ndarray:
        """Clip features ``[B, D]`` of uint8 videos ``[B, T, H, W, 3]`` (the "FVD" feature space)."""
        out = [self(self.prepare(frames[i : i + batch_size]))["features"] for i in range(0, len(frames), batch_size)]
        return torch.cat(out).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def frame_features(self, frames, masks: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
        """Per-frame appearance vectors ``[B, T', C]`` (every ``frame_stride``-th frame): stem maps
        averaged over the frame, or over the object where ``masks`` (bool ``[B, T, H, W]``)
        marks one (the whole frame where it marks nothing)."""
        out = []
        for i in range(0, len(frames), batch_size):
            maps = self.stem_maps(self.prepare(frames[i : i + batch_size]))  # [b, C, T, h, w]
            if masks is None:
                out.append(maps.mean((3, 4)).transpose(1, 2))
                continue
            m = torch.as_tensor(masks[i : i + batch_size, :: self.config.frame_stride], dtype=torch.float32, device=maps.device)
            m = F.adaptive_avg_pool2d(m, maps.shape[-2:])[:, None]  # object share of each map cell
            weight = torch.where(m.sum((3, 4), keepdim=True) > 0, m, torch.ones_like(m))
            out.append(((maps * weight).sum((3, 4)) / weight.sum((3, 4))).transpose(1, 2))
        return torch.cat(out).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def read_objects(self, frames, query_colours: list[list[str | None]], batch_size: int = 32) -> list[list[dict]]:
        """Read the objects of each video: for ``query_colours[i]`` (one entry per object the
        prompt names; None = the prompt names no colour) the attributes the probe sees.

        The query for an object is its prompt colour when the probe sees that colour in the
        video, else the most probable colour no other object of the prompt claims, so that
        shape and motion are read from whatever object is there even when its colour is wrong.
        """
        colours = list(self.config.colours)
        probs = np.concatenate(
            [
                torch.sigmoid(self(self.prepare(frames[i : i + batch_size]))["colour_logits"]).cpu().numpy()
                for i in range(0, len(frames), batch_size)
            ]
        )
        pairs = []  # (video index, query colour index), one per named object
        for i, wanted in enumerate(query_colours):
            claimed = {colours.index(w) for w in wanted if w in colours}
            taken: list[int] = []
            for want in wanted:
                if want in colours and probs[i, colours.index(want)] > 0.5:
                    q = colours.index(want)
                else:
                    order = [int(c) for c in np.argsort(-probs[i]) if int(c) not in claimed and int(c) not in taken]
                    q = order[0] if order else int(np.argmax(probs[i]))
                taken.append(q)
                pairs.append((i, q))
        labels = {name: [] for name in QUERY_HEADS}
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            video = self.prepare(np.stack([frames[i] for i, _ in chunk]))
            out = self(video, torch.tensor([q for _, q in chunk], dtype=torch.long, device=video.device))
            for name in QUERY_HEADS:
                labels[name] += [self._vocab(name)[int(k)] for k in out[f"{name}_logits"].argmax(1)]
        results, k = [], 0
        for i, wanted in enumerate(query_colours):
            objs = []
            for _ in wanted:
                q = pairs[k][1]
                obj = {"colour_present": dict(zip(colours, probs[i].tolist())), "query": colours[q]}
                obj["colour"] = colours[q] if probs[i, q] > 0.5 else None
                obj.update({name: labels[name][k] for name in QUERY_HEADS})
                objs.append(obj)
                k += 1
            results.append(objs)
        return results


def probe_targets(scene, probe: AttributeProbe) -> dict[str, torch.Tensor]:
    """Training labels of one world scene: colour presence, and per object its query colour
    and its shape / motion / size / speed indices (speed -1 where it has no meaning)."""
    cfg = probe.config
    present = torch.zeros(len(cfg.colours))
    rows = []
    for obj in scene.objects:
        present[list(cfg.colours).index(obj.colour)] = 1.0
        speed = -1 if obj.motion in SPEEDLESS_MOTIONS else list(cfg.speeds).index(obj.speed)
        rows.append(
            [
                list(cfg.colours).index(obj.colour),
                list(cfg.shapes).index(obj.shape),
                list(cfg.motions).index(obj.motion),
                list(cfg.sizes).index(obj.size),
                speed,
            ]
        )
    return {"colours": present, "objects": torch.tensor(rows, dtype=torch.long)}


def probe_loss(
    probe: AttributeProbe, video: torch.Tensor, present: torch.Tensor, objects: torch.Tensor, masks: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Loss on a batch: ``video`` [B, 3, T, H, W], ``present`` [B, colours] (0/1), ``objects``
    [B, 5] = (query colour, shape, motion, size, speed) of one object of each clip, and
    optionally ``masks`` [B, T', H, W] in [0, 1], that object's visible coverage in every
    ``silhouette_frame_stride``-th frame (``world.render_masks``), which supervises the
    silhouette gate."""
    out = probe(video, objects[:, 0])
    # summed over colours: eight yes/no questions, each as loud as one of the other heads
    losses = {"colour": F.binary_cross_entropy_with_logits(out["colour_logits"], present, reduction="sum") / len(present)}
    for k, name in enumerate(QUERY_HEADS, start=1):
        losses[name] = F.cross_entropy(out[f"{name}_logits"], objects[:, k], ignore_index=-1)
    if masks is not None:
        # x5: a per-pixel mean is small beside the heads' losses, and the shape head needs the mask first
        losses["mask"] = 5.0 * F.binary_cross_entropy_with_logits(out["mask_logits"], masks.to(out["mask_logits"]))
    losses["total"] = sum(losses.values())
    return losses


def attribute_accuracy(probe: AttributeProbe, frames, objects: list) -> dict[str, float]:
    """Accuracy of the probe's reading of each attribute against the objects ``objects[i]``
    (ObjectSpecs or dicts) of video ``i``; ``composition``: every attribute of every object right."""
    specs = [[o if isinstance(o, dict) else o.__dict__ for o in objs] for objs in objects]
    reads = probe.read_objects(frames, [[o.get("colour") for o in objs] for objs in specs])
    hits: dict[str, list[bool]] = {name: [] for name in ("colour", *QUERY_HEADS)}
    whole = []
    for objs, read in zip(specs, reads):
        all_ok = True
        for spec, got in zip(objs, read):
            for name in hits:
                if spec.get(name) is None or (name == "speed" and spec.get("motion") in SPEEDLESS_MOTIONS):
                    continue
                ok = got[name] == spec[name]
                hits[name].append(ok)
                all_ok &= ok
        whole.append(all_ok)
    return {**{k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}, "composition": float(np.mean(whole)), "n": len(whole)}
