"""Draws the example input (a stand-in for an AcuSim render: a head-and-shoulders figure on a plain
background, named like an AcuSim sample) and the example scene. Needs Pillow.

    python examples/make_examples.py
"""
import pathlib

from PIL import Image, ImageDraw, ImageFilter

HERE = pathlib.Path(__file__).parent
W = 512


def figure():
    img = Image.new("RGB", (W, W), (236, 236, 236))
    d = ImageDraw.Draw(img)
    skin = (214, 168, 140)
    d.ellipse([96, 380, 416, 620], fill=skin)                # shoulders
    d.rectangle([212, 300, 300, 420], fill=(204, 158, 130))  # neck
    d.ellipse([176, 110, 336, 320], fill=skin)               # head
    d.ellipse([214, 190, 238, 204], fill=(60, 40, 35))       # eyes
    d.ellipse([274, 190, 298, 204], fill=(60, 40, 35))
    d.polygon([(256, 205), (246, 250), (266, 250)], fill=(196, 150, 124))  # nose
    d.arc([226, 255, 286, 285], 20, 160, fill=(150, 80, 80), width=4)       # mouth
    d.chord([170, 96, 342, 200], 180, 360, fill=(70, 50, 40))                # hair
    return img


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
