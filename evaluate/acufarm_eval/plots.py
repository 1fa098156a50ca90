"""Loss curves per arm (like the seed paper's Fig. 2), against epochs and optimizer steps, and
the test error of every acupoint per arm."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LOSSES = (("vis_rmse", "visibility RMSE"), ("cls_ce", "classification cross-entropy"), ("coord_softwing", "coordinate soft-wing"))
COLOURS = {"original": "#1f77b4", "augmented": "#d62728", "both": "#2ca02c"}


def _curves(doc, x_key, x_label, path):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    for ax, (key, title) in zip(axes, LOSSES):
        for arm, entry in doc["arms"].items():
            c = entry["curves"]
            x = [h[x_key] for h in c]
            colour = COLOURS.get(arm)
            ax.plot(x, [h["train"][key] for h in c], color=colour, label=f"{arm} train")
            ax.plot(x, [h["val"][key] for h in c], color=colour, linestyle="--", label=f"{arm} validation")
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{doc['config']['backbone']} ({doc['initialisation']} init): mean over {doc['config']['seeds']} seed(s) × {len(doc['splits'])} fold(s)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(doc, table, out):
    _curves(doc, "epoch", "epoch", out / "loss_curves.png")
    _curves(doc, "steps", "optimizer steps", out / "loss_curves_steps.png")
    fig, ax = plt.subplots(figsize=(14, 4), constrained_layout=True)
    x = np.arange(table.count)
    for arm, entry in doc["arms"].items():
        y = np.array([np.nan if v is None else v for v in entry["per_point_error_px"]], dtype=float)
        ax.plot(x, y, marker="o", markersize=2.5, linewidth=0.8, color=COLOURS.get(arm), label=arm)
    for g, members in zip(table.groups, table.members):
        ax.axvline(members[0] - 0.5, color="#999", linewidth=0.5)
        ax.text(np.mean(members), 1.0, g, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("acupoint (map.txt order, grouped by meridian)")
    ax.set_ylabel("mean test error (px)")
    ax.set_xlim(-1, table.count)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.savefig(out / "per_point_error.png", dpi=110)
    plt.close(fig)
