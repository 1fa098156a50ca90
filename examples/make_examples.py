"""Draws the example input (a stand-in for an AcuSim render: a head-and-shoulders figure on a plain
background, named like an AcuSim sample), the example scene, and `acusim-mini/`: a tiny dataset in
AcuSim's layout (3 models × 3 views at 256², labels, map.txt) for the embedded demo run.
Needs Pillow.

    python examples/make_examples.py
"""
import json
import pathlib

from PIL import Image, ImageDraw, ImageFilter

HERE = pathlib.Path(__file__).parent
W = 512


def figure(skin=(214, 168, 140), hair=(70, 50, 40)):
    img = Image.new("RGB", (W, W), (236, 236, 236))
    d = ImageDraw.Draw(img)
    d.ellipse([96, 380, 416, 620], fill=skin)                # shoulders
    d.rectangle([212, 300, 300, 420], fill=(204, 158, 130))  # neck
    d.ellipse([176, 110, 336, 320], fill=skin)               # head
    d.ellipse([214, 190, 238, 204], fill=(60, 40, 35))       # eyes
    d.ellipse([274, 190, 298, 204], fill=(60, 40, 35))
    d.polygon([(256, 205), (246, 250), (266, 250)], fill=(196, 150, 124))  # nose
    d.arc([226, 255, 286, 285], 20, 160, fill=(150, 80, 80), width=4)       # mouth
    if hair is not None:
        d.chord([170, 96, 342, 200], 180, 360, fill=hair)    # hair
    return img


# (model folder, skin, hair colour or None for bald); views are frame numbers kept by the demo spec.
MINI_MODELS = [("M_Asher_N_HD", (214, 168, 140), (70, 50, 40)), ("F_Grace_N_HA", (236, 196, 170), (150, 90, 40)),
               ("M_Novak_S_BD", (170, 120, 90), None)]
MINI_VIEWS = [1, 2, 30]
# Where three acupoints sit on the drawn figure (normalised x, y), as AcuSim labels them.
MINI_POINTS = [("GV20_百会", 0.5, 0.2), ("LI20_迎香_left", 0.53, 0.46), ("LI20_迎香_right", 0.47, 0.46)]


def mini_dataset(root):
    images, labels = root / "train" / "image" / "img_512", root / "train" / "label" / "label"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    (root / "map.txt").write_text("".join(name + "\n" for name, _, _ in MINI_POINTS), encoding="utf-8")
    for model, skin, hair in MINI_MODELS:
        for view in MINI_VIEWS:
            shift = (view % 7) * 4
            canvas = Image.new("RGB", (W, W), (236, 236, 236))
            canvas.paste(figure(skin, hair), (shift, 0))
            canvas.resize((256, 256), Image.LANCZOS).save(images / f"{model}_{view:04d}.png", optimize=True)
            points = [{"name": n, "coordinate": {"x": round(x + shift / W, 6), "y": y, "n": -0.9, "h": 0.8}} for n, x, y in MINI_POINTS]
            (labels / f"{model}_{view:04d}.json").write_text(json.dumps({"label": points}, ensure_ascii=False), encoding="utf-8")


def scene():
    img = Image.new("RGB", (W, W))
    px = img.load()
    for y in range(W):
        t = y / W
        for x in range(W):
            px[x, y] = (int(200 - 60 * t), int(150 - 50 * t), int(100 - 40 * t)) if y < 380 else (110, 70, 45)
    d = ImageDraw.Draw(img)
    d.rectangle([320, 60, 470, 260], fill=(255, 244, 214))  # window
    d.line([(395, 60), (395, 260)], fill=(150, 110, 80), width=6)
    d.line([(320, 160), (470, 160)], fill=(150, 110, 80), width=6)
    return img.filter(ImageFilter.GaussianBlur(3))


if __name__ == "__main__":
    figure().save(HERE / "images" / "M_Demo_N_HD_0017.png", optimize=True)
    scene().save(HERE / "scenes" / "warm_room.png", optimize=True)
    mini_dataset(HERE / "acusim-mini")
