"""AcuSim's example network: a torchvision backbone, global average pooling, and one head per
meridian (a shared MLP, then visibility, coordinate and classification layers), as in the
dataset's acuSimNet. Backbones start from random weights unless a torchvision state dict is given.
"""
import hashlib

import torch
import torch.nn as nn
import torchvision

BACKBONES = ("densenet201", "resnet18")
# ImageNet statistics: what torchvision's pretrained weights expect, harmless for random ones.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    pass


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def backbone(name, weights=None):
    """(feature extractor returning [B, F], F)."""
    if name == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        head = "fc."
        features = net.fc.in_features
        net.fc = nn.Identity()
    elif name == "densenet201":
        net = torchvision.models.densenet201(weights=None)
        head = "classifier."
        features = net.classifier.in_features
        net.classifier = nn.Identity()
    else:
        raise WeightsError(f"backbone `{name}` is not one of {', '.join(BACKBONES)}")
    if weights:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several kinds for a file that is not a state dict
            raise WeightsError(f"cannot load {weights} as a PyTorch state dict ({e}); pass torchvision's {name} weights (.pth)") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"{weights} holds no state dict; pass torchvision's {name} weights (.pth)")
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            shown = ", ".join((missing + unexpected)[:4])
            raise WeightsError(f"{weights} does not fit {name} ({len(missing)} missing and {len(unexpected)} unexpected tensors, e.g. {shown}); pass torchvision's {name} weights")
    return net, features


class MeridianHead(nn.Module):
    def __init__(self, features, points, hidden=512):
        super().__init__()
        self.points = points
        self.shared = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Dropout(0.2), nn.LayerNorm(hidden))
        self.vis = nn.Linear(hidden, points)
        self.coord = nn.Linear(hidden, points * 2)
        self.cls = nn.Linear(hidden, points * points)
        # Coordinates start at the image centre: PyTorch's default init scatters the first
        # predictions over ±0.6 image widths, which the optimizer then spends its first thousands
        # of steps undoing (the example's first coordinate loss, ≈ 4.5, is that scatter).
        nn.init.normal_(self.coord.weight, std=1e-3)
        nn.init.constant_(self.coord.bias, 0.5)

    def forward(self, x):
        h = self.shared(x)
        k = self.points
        return self.vis(h), self.coord(h).view(-1, k, 2), self.cls(h).view(-1, k, k)


class AcupointNet(nn.Module):
    def __init__(self, table, backbone_name, weights=None):
        super().__init__()
        self.backbone, features = backbone(backbone_name, weights)
        self.heads = nn.ModuleList(MeridianHead(features, len(m)) for m in table.members)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.members = [torch.tensor(m, dtype=torch.long) for m in table.members]
        self.count = table.count

    def forward(self, images_u8):
        """uint8 [B, H, W, 3] -> (visibility logits [B, P], coordinates [B, P, 2], class logits per group)."""
        x = images_u8.permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self.mean) / self.std
        f = self.backbone(x)
        b = f.shape[0]
        vis = f.new_zeros(b, self.count)
        coord = f.new_zeros(b, self.count, 2)
        cls = []
        for head, idx in zip(self.heads, self.members):
            v, c, k = head(f)
            idx = idx.to(f.device)
            vis = vis.index_copy(1, idx, v)
            coord = coord.index_copy(1, idx, c)
            cls.append(k)
        return vis, coord, cls
